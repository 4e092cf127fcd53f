# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""E2ECacheHook: building, reusing, repairing and using the E2E cache."""
import copy
import json
import os
import os.path as osp
import signal
import socket
import subprocess
import sys
import textwrap
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.dataset import Compose
from mmengine.hooks import Hook
from mmengine.runner import Runner
from mmseg.registry import DATASETS, MODELS

import mmseg_resensemble.engine.hooks.e2e_cache_hook as hook_module
from mmseg_resensemble.datasets import (E2ECacheError, E2ECacheStore,
                                        generate_shapes_dataset)
from mmseg_resensemble.engine.hooks import E2ECacheHook, build_e2e_cache
from tests.tiny_models import DATA_PREPROCESSOR, fcn_e2e, head_cfg

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
K = 5  # the shapes data set's classes
SIZE = (24, 32)
TEST_PIPELINE = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(32, 24), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs')
]


def counts(hook):
    """The hook's counts, without the time it took."""
    assert hook.stats['seconds'] >= 0
    return {k: v for k, v in hook.stats.items() if k != 'seconds'}


def train_pipeline(cache_dir):
    return [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations'),
        dict(type='LoadE2ECache', cache_dir=cache_dir),
        dict(
            type='RandomResize',
            scale=(32, 24),
            ratio_range=(0.75, 1.5),
            keep_ratio=True),
        dict(type='RandomCrop', crop_size=SIZE, cat_max_ratio=0.9),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PackResEnsembleInputs')
    ]


def dataset_cfg(root, pipeline):
    return dict(
        type='SyntheticShapesDataset',
        data_root=root,
        data_prefix=dict(
            img_path='img_dir/train', seg_map_path='ann_dir/train'),
        pipeline=pipeline)


def save_e2e_checkpoint(path, seed=0):
    torch.manual_seed(seed)
    e2e = MODELS.build(fcn_e2e(num_classes=K))
    e2e.init_weights()
    # non-trivial BN statistics, so that eval mode is not the identity
    for m in e2e.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    torch.save(dict(state_dict=e2e.state_dict()), path)
    return path


def model_cfg(ckpt, e2e=None):
    return dict(
        type='ResEnsembleSegmentor',
        e2e=e2e or fcn_e2e(num_classes=K),
        e2e_checkpoint=ckpt,
        decode_head=head_cfg(num_classes=K),
        test_cfg=dict(sampler='ddim', num_steps=2))


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    """Tiny models gain nothing from threads on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('shapes'))
    return generate_shapes_dataset(root, splits=dict(train=6), size=SIZE)


@pytest.fixture(scope='module')
def ckpt(tmp_path_factory):
    return save_e2e_checkpoint(
        str(tmp_path_factory.mktemp('ckpt') / 'e2e.pth'))


def mock_runner(work_dir, model, dataset):
    return SimpleNamespace(
        model=model,
        work_dir=str(work_dir),
        cfg=Config(
            dict(test_dataloader=dict(dataset=dict(pipeline=TEST_PIPELINE)))),
        train_dataloader=SimpleNamespace(dataset=dataset))


def build(ckpt, root, cache_dir, e2e=None):
    model = MODELS.build(model_cfg(ckpt, e2e))
    dataset = DATASETS.build(dataset_cfg(root, train_pipeline(cache_dir)))
    return model, dataset


@pytest.fixture
def logs(monkeypatch):
    messages = []

    def record(msg, logger=None, level=20):
        messages.append(msg)

    monkeypatch.setattr(hook_module, 'print_log', record)
    return messages


def batch_for(model, img_path):
    """``img_path`` through the test pipeline without its Resize, then the
    data preprocessor."""
    data = Compose(copy.deepcopy(TEST_PIPELINE[:2] + TEST_PIPELINE[3:]))(
        dict(img_path=img_path, seg_fields=[]))
    return model.data_preprocessor(
        dict(inputs=[data['inputs']], data_samples=[data['data_samples']]))


def e2e_probs_direct(model, img_path):
    """The E2E learner's own probabilities (MMSeg's encode_decode), averaged
    over 4x4 cells: the stride of its finest (MobileNetV2) feature level."""
    batch = batch_for(model, img_path)
    with torch.no_grad():
        logits = model.e2e.encode_decode(batch['inputs'],
                                         [batch['data_samples'][0].metainfo])
    return F.avg_pool2d(logits.softmax(1), 4)[0]


def entry_mtimes(store):
    return {
        n: os.stat(p).st_mtime_ns
        for n, p in store.entry_keys_on_disk().items()
    }


def test_build_reuse_and_read_through_the_pipeline(tmp_path, data_root, ckpt,
                                                   logs):
    cache_dir = osp.join(str(tmp_path), 'e2e_cache')
    model, dataset = build(ckpt, data_root, cache_dir)
    hook = E2ECacheHook(cache_dir)
    hook.before_train(mock_runner(tmp_path, model, dataset))
    assert counts(hook) == dict(images=6, reused=0, computed=6, repaired=0)
    store = E2ECacheStore(cache_dir)
    meta = store.read_meta()
    assert meta['complete'] and meta['num_classes'] == K
    assert meta['key_root'] == osp.abspath(data_root)
    assert meta['fingerprint']['classes'] == list(dataset.metainfo['classes'])
    assert meta['fingerprint']['e2e_checkpoint_sha256'] is not None
    assert len(store.entry_keys_on_disk()) == 6
    # the hook read the train pipeline's transform and left it as it was
    load = [
        t for t in dataset.pipeline.transforms
        if type(t).__name__ == 'LoadE2ECache'
    ]
    assert load[0].cache_dir == cache_dir
    # the entries are the E2E learner's probabilities at 1/4 resolution
    for i in range(2):
        img_path = dataset.get_data_info(i)['img_path']
        cached, header = store.read_entry(
            store.key_for(img_path, data_root), meta=meta)
        direct = e2e_probs_direct(model, img_path)
        assert cached.shape == (SIZE[0] // 4, SIZE[1] // 4, K)
        np.testing.assert_allclose(
            cached / 255.,
            direct.permute(1, 2, 0).numpy(),
            atol=0.5 / 255 + 1e-6)
        assert header['img_bytes'] == os.stat(img_path).st_size
    # and the train pipeline packs them at the augmented image's size
    sample = dataset[0]['data_samples']
    assert sample.e2e_probs.shape == tuple(sample.img_shape)
    torch.testing.assert_close(
        sample.e2e_probs.data.sum(0),
        torch.ones(sample.img_shape),
        atol=1e-6,
        rtol=0)
    # a second run reuses every entry and rewrites none
    before = entry_mtimes(store)
    logs.clear()
    model2, dataset2 = build(ckpt, data_root, cache_dir)
    hook2 = E2ECacheHook(cache_dir)
    hook2.before_train(mock_runner(tmp_path, model2, dataset2))
    assert counts(hook2) == dict(images=6, reused=6, computed=0, repaired=0)
    assert entry_mtimes(store) == before
    assert any('fingerprint matches (complete)' in m for m in logs)


@pytest.mark.parametrize('change', ['weights', 'pipeline', 'topk'])
def test_fingerprint_mismatch_rebuilds(tmp_path, data_root, ckpt, logs,
                                       change):
    cache_dir = str(tmp_path / 'cache')
    model, dataset = build(ckpt, data_root, cache_dir)
    E2ECacheHook(cache_dir).before_train(mock_runner(tmp_path, model, dataset))
    old_digest = E2ECacheStore(cache_dir).read_meta()['digest']
    logs.clear()
    hook = E2ECacheHook(cache_dir)
    if change == 'weights':
        other = save_e2e_checkpoint(str(tmp_path / 'other.pth'), seed=1)
        model, dataset = build(other, data_root, cache_dir)
        expected = ['e2e_checkpoint_sha256', 'e2e_state_sha256']
    elif change == 'pipeline':
        pipeline = copy.deepcopy(TEST_PIPELINE)
        pipeline[1]['scale'] = (64, 48)
        hook = E2ECacheHook(cache_dir, pipeline=pipeline)
        expected = ['test_pipeline']
    else:
        hook = E2ECacheHook(cache_dir, topk=2)
        expected = ['storage']
    hook.before_train(mock_runner(tmp_path, model, dataset))
    assert hook.stats['computed'] == 6 and hook.stats['reused'] == 0
    stale = [m for m in logs if 'stale' in m]
    assert len(stale) == 1 and 'rebuilding' in stale[0]
    assert 'removed 6 old entries' in stale[0]
    changed = stale[0].split('changed in: ')[1].split(')')[0].split(', ')
    assert changed == expected
    meta = E2ECacheStore(cache_dir).read_meta()
    assert meta['digest'] != old_digest and meta['complete']
    if change == 'pipeline':  # entries at the new test scale: 48x64 / 4
        store = E2ECacheStore(cache_dir)
        img_path = dataset.get_data_info(0)['img_path']
        probs, _ = store.read_entry(
            store.key_for(img_path, data_root), meta=meta)
        assert probs.shape == (12, 16, K)
    if change == 'topk':
        assert meta['topk'] == 2


def test_moved_initial_weights_keep_the_cache(tmp_path, data_root, ckpt, logs):
    """The E2E config's ``init_cfg`` path (here: its pretrained backbone in
    another work dir) is no part of the fingerprint: the trained weights
    are, by content."""

    def e2e(work_dir):
        cfg = fcn_e2e(num_classes=K)
        cfg['backbone'] = dict(
            cfg['backbone'],
            init_cfg=dict(
                type='Pretrained', checkpoint=f'{work_dir}/backbone.pth'))
        return cfg

    cache_dir = str(tmp_path / 'cache')
    model, dataset = build(ckpt, data_root, cache_dir, e2e=e2e('/run/a'))
    E2ECacheHook(cache_dir).before_train(mock_runner(tmp_path, model, dataset))
    logs.clear()
    model, dataset = build(ckpt, data_root, cache_dir, e2e=e2e('/run/b'))
    hook = E2ECacheHook(cache_dir)
    hook.before_train(mock_runner(tmp_path, model, dataset))
    assert counts(hook) == dict(images=6, reused=6, computed=0, repaired=0)
    assert not [m for m in logs if 'stale' in m]


def test_another_e2e_learner_is_refused_while_a_run_uses_the_cache(
        tmp_path, data_root, ckpt, logs):
    """A second run with another E2E learner on the same cache folder is
    refused, naming the first run, instead of rebuilding under it."""
    cache_dir = str(tmp_path / 'cache')
    model, dataset = build(ckpt, data_root, cache_dir)
    first = E2ECacheHook(cache_dir)
    first.before_train(mock_runner(tmp_path / 'first', model, dataset))
    store = E2ECacheStore(cache_dir)
    digest = store.read_meta()['digest']
    assert os.listdir(store.users_dir) == [osp.basename(first._user_file)]
    # the first run, in another live process (this test's child)
    sleeper = subprocess.Popen(['sleep', '60'])
    first.after_run(None)
    assert os.listdir(store.users_dir) == []
    other_user = osp.join(store.users_dir, 'other-run.json')
    with open(other_user, 'w') as f:
        json.dump(
            dict(
                digest=digest,
                run='work_dirs/first',
                host=socket.gethostname(),
                pid=sleeper.pid,
                since='then'), f)
    other = save_e2e_checkpoint(str(tmp_path / 'other.pth'), seed=1)
    model, dataset = build(other, data_root, cache_dir)
    try:
        with pytest.raises(E2ECacheError) as info:
            E2ECacheHook(cache_dir).before_train(
                mock_runner(tmp_path / 'second', model, dataset))
    finally:
        sleeper.kill()
        sleeper.wait()
    message = str(info.value)
    assert "in use by another run" in message
    assert "'work_dirs/first'" in message and f'pid {sleeper.pid}' in message
    # nothing was rebuilt, and the refused run left no user file
    assert store.read_meta()['digest'] == digest
    assert len(store.entry_keys_on_disk()) == 6
    assert os.listdir(store.users_dir) == ['other-run.json']
    # a run with the same E2E learner may share the cache
    model, dataset = build(ckpt, data_root, cache_dir)
    E2ECacheHook(cache_dir).before_train(mock_runner(tmp_path, model, dataset))
    # once the first run's process is gone, its user file is removed
    model, dataset = build(other, data_root, cache_dir)
    hook = E2ECacheHook(cache_dir)
    hook.before_train(mock_runner(tmp_path / 'second', model, dataset))
    assert hook.stats['computed'] == 6
    assert not osp.exists(other_user)
    hook.after_run(None)


def test_invalid_entries_are_recomputed(tmp_path, data_root, ckpt, logs):
    cache_dir = str(tmp_path / 'cache')
    model, dataset = build(ckpt, data_root, cache_dir)
    E2ECacheHook(cache_dir).before_train(mock_runner(tmp_path, model, dataset))
    store = E2ECacheStore(cache_dir)
    paths = sorted(store.entry_keys_on_disk().values())
    with open(paths[0], 'r+b') as f:  # truncated
        f.truncate(os.path.getsize(paths[0]) // 2)
    os.remove(paths[1])  # missing
    logs.clear()
    hook = E2ECacheHook(cache_dir)
    hook.before_train(mock_runner(tmp_path, model, dataset))
    assert counts(hook) == dict(images=6, reused=4, computed=2, repaired=1)
    assert any(paths[0] in m and 'truncated or corrupt' in m for m in logs)
    meta = store.read_meta()
    for key in [
            store.key_for(p, data_root) for p in sorted(
                dataset.get_data_info(i)['img_path'] for i in range(6))
    ]:
        store.read_entry(key, meta=meta)  # all valid again


def test_ranks_compute_their_share(tmp_path, data_root, ckpt, monkeypatch,
                                   logs):
    cache_dir = str(tmp_path / 'cache')
    model, dataset = build(ckpt, data_root, cache_dir)
    store = E2ECacheStore(cache_dir)
    paths = sorted(dataset.get_data_info(i)['img_path'] for i in range(6))
    monkeypatch.setattr(hook_module, 'get_dist_info', lambda: (0, 2))
    hook = E2ECacheHook(cache_dir)
    hook.before_train(mock_runner(tmp_path, model, dataset))
    assert hook.stats['computed'] == 3
    assert not store.read_meta()['complete']
    present = [
        osp.isfile(store.entry_path(store.key_for(p, data_root)))
        for p in paths
    ]
    assert present == [True, False] * 3
    monkeypatch.setattr(hook_module, 'get_dist_info', lambda: (1, 2))
    hook.before_train(mock_runner(tmp_path, model, dataset))
    assert hook.stats['computed'] == 3 and hook.stats['reused'] == 0
    assert len(store.entry_keys_on_disk()) == 6


def test_slide_mode_entries(tmp_path, data_root, ckpt, logs):
    e2e = fcn_e2e(num_classes=K)
    e2e['test_cfg'] = dict(mode='slide', crop_size=(16, 16), stride=(8, 8))
    model, dataset = build(ckpt, data_root, str(tmp_path / 'c'), e2e=e2e)
    model.eval()
    hook = E2ECacheHook(str(tmp_path / 'c'))
    hook.before_train(mock_runner(tmp_path, model, dataset))
    store = E2ECacheStore(str(tmp_path / 'c'))
    meta = store.read_meta()
    assert meta['fingerprint']['e2e_test_cfg']['mode'] == 'slide'
    img_path = dataset.get_data_info(0)['img_path']
    cached, _ = store.read_entry(store.key_for(img_path, data_root), meta=meta)
    # the slide output at full resolution, averaged over 4x4 cells
    batch = batch_for(model, img_path)
    with torch.no_grad():
        logits = model.e2e.slide_inference(batch['inputs'],
                                           [batch['data_samples'][0].metainfo])
    expected = F.avg_pool2d(logits.softmax(1), 4)[0]
    assert cached.shape == (6, 8, K)
    np.testing.assert_allclose(
        cached / 255.,
        expected.permute(1, 2, 0).numpy(),
        atol=0.5 / 255 + 1e-6)


def test_test_time_padding_is_cropped(tmp_path, data_root, ckpt, logs):
    """A data preprocessor that pads test images (24x32 -> 32x32): the
    entry covers the image only, 6x8 cells of 4x4 pixels."""
    model = MODELS.build(
        dict(
            model_cfg(ckpt),
            data_preprocessor=dict(
                DATA_PREPROCESSOR, test_cfg=dict(size_divisor=32))))
    cache_dir = osp.join(str(tmp_path), 'e2e_cache')
    dataset = DATASETS.build(dataset_cfg(data_root, train_pipeline(cache_dir)))
    hook = E2ECacheHook(cache_dir)
    hook.before_train(mock_runner(tmp_path, model, dataset))
    store = E2ECacheStore(cache_dir)
    meta = store.read_meta()
    img_path = dataset.get_data_info(0)['img_path']
    cached, _ = store.read_entry(store.key_for(img_path, data_root), meta=meta)
    assert cached.shape == (6, 8, K)
    batch = batch_for(model, img_path)
    assert batch['inputs'].shape[-2:] == (32, 32)
    with torch.no_grad():
        logits = model.e2e.encode_decode(batch['inputs'],
                                         [batch['data_samples'][0].metainfo])
    probs = F.avg_pool2d(logits.softmax(1)[..., :24, :], 4)[0]
    np.testing.assert_allclose(
        cached / 255., probs.permute(1, 2, 0).numpy(), atol=0.5 / 255 + 1e-6)


KILL_SCRIPT = textwrap.dedent("""
    import sys
    import time
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS, MODELS

    import mmseg_resensemble  # noqa: F401
    from mmseg_resensemble.datasets import E2ECacheStore
    from mmseg_resensemble.engine.hooks import E2ECacheHook, build_e2e_cache
    from tests.test_engine.test_e2e_cache_hook import (dataset_cfg,
                                                        mock_runner,
                                                        model_cfg)

    init_default_scope('mmseg')
    ckpt, root, cache_dir, work_dir = sys.argv[1:5]
    write = E2ECacheStore.write_entry

    def slow_write(self, *args, **kwargs):
        path = write(self, *args, **kwargs)
        time.sleep(0.05)  # give the parent time to kill us mid-way
        return path

    E2ECacheStore.write_entry = slow_write
    runner = mock_runner(work_dir, MODELS.build(model_cfg(ckpt)),
                         DATASETS.build(dataset_cfg(root, [])))
    E2ECacheHook(cache_dir).before_train(runner)
""")


def test_killed_build_resumes(tmp_path, ckpt, logs):
    root = generate_shapes_dataset(
        str(tmp_path / 'data'), splits=dict(train=40), size=SIZE)
    cache_dir = str(tmp_path / 'cache')
    script = tmp_path / 'build.py'
    script.write_text(KILL_SCRIPT)
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS='1')
    proc = subprocess.Popen(
        [sys.executable,
         str(script), ckpt, root, cache_dir,
         str(tmp_path)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE)
    store = E2ECacheStore(cache_dir)
    deadline = time.time() + 120
    while len(store.entry_keys_on_disk()) < 8:
        if proc.poll() is not None:
            pytest.fail('the build ended before it was killed: ' +
                        proc.stderr.read().decode()[-2000:])
        assert time.time() < deadline, 'the build made no progress'
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    meta = store.read_meta()
    assert not meta['complete']
    done = len(store.entry_keys_on_disk())
    assert 8 <= done < 40
    # every entry on disk is whole (atomic writes)
    for name, path in store.entry_keys_on_disk().items():
        with np.load(path) as npz:
            key = __import__('json').loads(str(npz['header']))['key']
        store.read_entry(key, meta=meta)
    # the rerun computes only what is missing
    model = MODELS.build(model_cfg(ckpt))
    dataset = DATASETS.build(dataset_cfg(root, []))
    hook = E2ECacheHook(cache_dir)
    hook.before_train(mock_runner(tmp_path, model, dataset))
    assert counts(hook) == dict(
        images=40, reused=done, computed=40 - done, repaired=0)
    assert store.read_meta()['complete']
    assert len(store.entry_keys_on_disk()) == 40


def test_misconfiguration(tmp_path, data_root, ckpt):
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
    # a runner without the hook: nothing to build
    plain = Runner.from_cfg(Config(dict(cfg, custom_hooks=[])))
    assert build_e2e_cache(plain) is None


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


def test_entries_are_the_segmentors_e2e_probs(tmp_path, data_root, ckpt, logs):
    """The cache stores what ResEnsembleSegmentor.e2e_probs gives (the x̂0
    of training on the fly), area-averaged to the finest feature level."""
    cache_dir = osp.join(str(tmp_path), 'e2e_cache')
    model, dataset = build(ckpt, data_root, cache_dir)
    outputs = []
    original = model.e2e_probs

    def recorded(*args, **kwargs):
        outputs.append(original(*args, **kwargs))
        return outputs[-1]

    model.e2e_probs = recorded
    hook = E2ECacheHook(cache_dir)
    hook.before_train(mock_runner(tmp_path, model, dataset))
    assert len(outputs) == 6  # one call per image
    store = E2ECacheStore(cache_dir)
    meta = store.read_meta()
    first = sorted(dataset.get_data_info(i)['img_path'] for i in range(6))[0]
    cached, _ = store.read_entry(store.key_for(first, data_root), meta=meta)
    expected = F.avg_pool2d(outputs[0], 4)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(cached / 255., expected, atol=0.5 / 255 + 1e-6)
