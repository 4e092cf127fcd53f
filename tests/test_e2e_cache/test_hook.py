# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""E2ECacheHook and build_e2e_cache: the E2E cache in mmengine's runner."""
import copy
import os
import os.path as osp

import pytest
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner

import mmseg_resensemble.e2e_cache.builder as builder_module
from mmseg_resensemble.e2e_cache import (E2ECacheError, E2ECacheHook,
                                         E2ECacheStore, build_e2e_cache)
from tests.test_e2e_cache.helpers import (TEST_PIPELINE, build, counts,
                                          dataset_cfg, mock_runner, model_cfg,
                                          train_pipeline)


def test_before_train_builds_and_after_run_releases(tmp_path, data_root, ckpt,
                                                    logs):
    cache_dir = str(tmp_path / 'cache')
    model, dataset = build(ckpt, data_root, cache_dir)
    hook = E2ECacheHook(cache_dir)
    assert hook.cache_dir == cache_dir
    hook.before_train(mock_runner(tmp_path / 'work', model, dataset))
    assert counts(hook.stats) == dict(
        images=6, reused=0, computed=6, repaired=0)
    store = E2ECacheStore(cache_dir)
    assert store.read_meta()['complete']
    # the run is a user of the cache until it ends, named by its work dir
    assert os.listdir(
        store.users_dir) == [osp.basename(hook.builder.user_file)]
    with open(hook.builder.user_file) as f:
        assert str(tmp_path / 'work') in f.read()
    hook.after_run(None)
    assert os.listdir(store.users_dir) == []
    # another run reuses it
    hook = E2ECacheHook(cache_dir)
    hook.before_train(mock_runner(tmp_path, model, dataset))
    assert counts(hook.stats) == dict(
        images=6, reused=6, computed=0, repaired=0)
    hook.after_run(None)


def test_prepare_records_whether_the_cache_is_ready(tmp_path, data_root, ckpt,
                                                    monkeypatch, logs):
    """After a prepare() that completed the cache, before_train has nothing
    to do; after one that did not (here: one rank of two), it builds the
    rest."""
    cache_dir = str(tmp_path / 'cache')
    model, dataset = build(ckpt, data_root, cache_dir)
    runner = mock_runner(tmp_path, model, dataset)
    monkeypatch.setattr(builder_module, 'get_dist_info', lambda: (0, 2))
    hook = E2ECacheHook(cache_dir)
    stats = hook.prepare(runner, dataset)
    assert stats is hook.stats and stats['computed'] == 3
    monkeypatch.setattr(builder_module, 'get_dist_info', lambda: (0, 1))
    hook.before_train(runner)  # not ready: builds the missing half
    assert counts(hook.stats) == dict(
        images=6, reused=3, computed=3, repaired=0)
    hook = E2ECacheHook(cache_dir)
    stats = hook.prepare(runner, dataset)
    assert stats['reused'] == 6
    hook.before_train(runner)  # ready: builds nothing
    assert hook.stats is stats
    hook.after_run(None)


def test_hook_misconfiguration(tmp_path, data_root, ckpt):
    """The hook checks its arguments when it is built, and the model and
    pipeline of the runner when it builds."""
    a = str(tmp_path / 'a')
    model, dataset = build(ckpt, data_root, a)
    with pytest.raises(ValueError, match='disagree'):
        E2ECacheHook(str(tmp_path / 'b')).before_train(
            mock_runner(tmp_path, model, dataset))
    with pytest.raises(ValueError, match='topk=5 must be < num_classes=5'):
        E2ECacheHook(
            a, topk=5).before_train(mock_runner(tmp_path, model, dataset))
    with pytest.raises(ValueError, match='TestTimeAug'):
        E2ECacheHook(
            a,
            pipeline=[dict(type='TestTimeAug')
                      ]).before_train(mock_runner(tmp_path, model, dataset))
    with pytest.raises(TypeError, match='ResEnsembleSegmentor'):
        E2ECacheHook(a).before_train(mock_runner(tmp_path, model.e2e, dataset))
    with pytest.raises(ValueError, match='topk'):
        E2ECacheHook(a, topk=0)
    # the directory is explicit: no default, none filled in
    for bad in (None, ''):
        with pytest.raises(ValueError, match='cache_dir must be a non-empty'):
            E2ECacheHook(bad)


class CacheProbe(Hook):
    """Records whether training batches carry the cached E2E maps and
    whether the E2E decode head ran during training."""
    priority = 'LOWEST'

    def __init__(self):
        self.shapes = []
        self.e2e_calls = 0

    def before_train(self, runner):
        model = runner.model
        original = model.e2e_probs

        def counted(*args, **kwargs):
            self.e2e_calls += 1
            return original(*args, **kwargs)

        model.e2e_probs = counted

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        for ds in data_batch['data_samples']:
            assert 'e2e_probs' in ds, ds.img_path
            self.shapes.append(
                (tuple(ds.e2e_probs.shape), tuple(ds.img_shape)))


def real_runner_cfg(work_dir, data_root, ckpt, num_workers):
    cache_dir = osp.join(str(work_dir), 'e2e_cache')
    dataloader = dict(
        batch_size=2,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        sampler=dict(type='InfiniteSampler', shuffle=True),
        dataset=dataset_cfg(data_root, train_pipeline(cache_dir)))
    test_loader = dict(
        batch_size=1,
        num_workers=0,
        sampler=dict(type='DefaultSampler', shuffle=False),
        dataset=dataset_cfg(data_root, TEST_PIPELINE))
    return Config(
        dict(
            default_scope='mmseg',
            work_dir=str(work_dir),
            model=model_cfg(ckpt),
            train_dataloader=dataloader,
            train_cfg=dict(
                type='IterBasedTrainLoop', max_iters=3, val_interval=100),
            optim_wrapper=dict(
                type='OptimWrapper',
                constructor='TrainableParamsOptimWrapperConstructor',
                optimizer=dict(type='SGD', lr=0.01)),
            test_dataloader=test_loader,
            test_cfg=dict(type='TestLoop'),
            test_evaluator=dict(type='IoUMetric'),
            custom_hooks=[dict(type='E2ECacheHook', cache_dir=cache_dir)],
            default_hooks=dict(
                logger=dict(type='LoggerHook', interval=1), checkpoint=None),
            log_level='WARNING',
            randomness=dict(seed=0))), cache_dir


def train_probed(runner):
    probe = CacheProbe()
    runner.register_hook(probe)
    runner.train()
    assert len(probe.shapes) == 6  # 3 iterations of 2 images
    for probs_shape, img_shape in probe.shapes:
        assert probs_shape == img_shape
    assert probe.e2e_calls == 0  # x̂0 came from the cache


def test_training_with_a_real_runner(tmp_path, data_root, ckpt):
    """build_e2e_cache() builds the cache before the training loop starts
    its (persistent) data workers, which then find it complete; the hook's
    before_train has nothing left to do."""
    cfg, cache_dir = real_runner_cfg(tmp_path / 'work', data_root, ckpt, 1)
    runner = Runner.from_cfg(cfg)
    stats = build_e2e_cache(runner)
    assert stats['computed'] == 6 and stats['images'] == 6
    hook = [h for h in runner.hooks if isinstance(h, E2ECacheHook)][0]
    train_probed(runner)
    assert hook.stats is stats  # before_train built nothing more
    store = E2ECacheStore(cache_dir)
    meta = store.read_meta()
    assert meta['complete'] and len(store.entry_keys_on_disk()) == 6
    # the fingerprint holds the E2E learner's config from model.e2e
    assert meta['fingerprint']['e2e_config']['type'] == 'EncoderDecoder'
    # the run stopped using the cache when it ended
    assert os.listdir(store.users_dir) == []
    # a runner without the hook: nothing to build
    plain = Runner.from_cfg(Config(dict(cfg, custom_hooks=[])))
    assert build_e2e_cache(plain) is None
    # two hooks: which one's cache is meant is unclear
    two = Runner.from_cfg(Config(dict(cfg, custom_hooks=cfg.custom_hooks * 2)))
    with pytest.raises(ValueError, match='2 E2ECacheHook'):
        build_e2e_cache(two)


def test_cache_built_while_workers_run_stops_the_run(tmp_path, data_root,
                                                     ckpt):
    """Without build_e2e_cache(), the workers start before before_train: a
    cache that needed computing then stops the run (they may have loaded
    missing or stale entries), complete for the next start; with no
    workers the hook builds it in before_train and training goes on."""
    cfg, cache_dir = real_runner_cfg(tmp_path / 'work', data_root, ckpt, 1)
    with pytest.raises(E2ECacheError, match='start the training again'):
        Runner.from_cfg(copy.deepcopy(cfg)).train()
    assert E2ECacheStore(cache_dir).read_meta()['complete']
    train_probed(Runner.from_cfg(copy.deepcopy(cfg)))
    cfg0, _ = real_runner_cfg(tmp_path / 'work0', data_root, ckpt, 0)
    train_probed(Runner.from_cfg(cfg0))
