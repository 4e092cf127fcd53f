# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""E2ECacheBuilder: building, reusing, repairing and sharing the E2E
cache."""
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

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmseg.registry import DATASETS, MODELS

import mmseg_resensemble.e2e_cache.builder as builder_module
from mmseg_resensemble.datasets import generate_shapes_dataset
from mmseg_resensemble.e2e_cache import (E2ECacheBuilder, E2ECacheError,
                                         E2ECacheStore)
from tests.test_e2e_cache.helpers import (SIZE, TEST_PIPELINE, K, batch_for,
                                          build, counts, dataset_cfg,
                                          e2e_probs_direct, entry_mtimes,
                                          model_cfg, run_builder,
                                          save_e2e_checkpoint, train_pipeline)
from tests.tiny_models import DATA_PREPROCESSOR, fcn_e2e

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def test_build_reuse_and_read_through_the_pipeline(tmp_path, data_root, ckpt,
                                                   logs):
    cache_dir = osp.join(str(tmp_path), 'e2e_cache')
    model, dataset = build(ckpt, data_root, cache_dir)
    stats = run_builder(E2ECacheBuilder(cache_dir), tmp_path, model, dataset)
    assert counts(stats) == dict(images=6, reused=0, computed=6, repaired=0)
    store = E2ECacheStore(cache_dir)
    meta = store.read_meta()
    assert meta['complete'] and meta['num_classes'] == K
    assert meta['key_root'] == osp.abspath(data_root)
    assert meta['fingerprint']['classes'] == list(dataset.metainfo['classes'])
    assert meta['fingerprint']['e2e_checkpoint_sha256'] is not None
    assert len(store.entry_keys_on_disk()) == 6
    # the builder read the train pipeline's transform and left it as it was
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
        assert header['learner'] == 'e2e'
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
    stats = run_builder(E2ECacheBuilder(cache_dir), tmp_path, model2, dataset2)
    assert counts(stats) == dict(images=6, reused=6, computed=0, repaired=0)
    assert entry_mtimes(store) == before
    assert any('fingerprint matches (complete)' in m for m in logs)


@pytest.mark.parametrize('change', ['weights', 'pipeline', 'topk'])
def test_fingerprint_mismatch_rebuilds(tmp_path, data_root, ckpt, logs,
                                       change):
    cache_dir = str(tmp_path / 'cache')
    model, dataset = build(ckpt, data_root, cache_dir)
    run_builder(E2ECacheBuilder(cache_dir), tmp_path, model, dataset)
    old_digest = E2ECacheStore(cache_dir).read_meta()['digest']
    logs.clear()
    builder = E2ECacheBuilder(cache_dir)
    if change == 'weights':
        other = save_e2e_checkpoint(str(tmp_path / 'other.pth'), seed=1)
        model, dataset = build(other, data_root, cache_dir)
        expected = ['e2e_checkpoint_sha256', 'e2e_state_sha256']
    elif change == 'pipeline':
        pipeline = copy.deepcopy(TEST_PIPELINE)
        pipeline[1]['scale'] = (64, 48)
        builder = E2ECacheBuilder(cache_dir, pipeline=pipeline)
        expected = ['test_pipeline']
    else:
        builder = E2ECacheBuilder(cache_dir, topk=2)
        expected = ['storage']
    stats = run_builder(builder, tmp_path, model, dataset)
    assert stats['computed'] == 6 and stats['reused'] == 0
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


def test_rebuild_recomputes_a_valid_cache(tmp_path, data_root, ckpt, logs):
    cache_dir = str(tmp_path / 'cache')
    model, dataset = build(ckpt, data_root, cache_dir)
    run_builder(E2ECacheBuilder(cache_dir), tmp_path, model, dataset)
    logs.clear()
    stats = run_builder(
        E2ECacheBuilder(cache_dir, rebuild=True), tmp_path, model, dataset)
    assert counts(stats) == dict(images=6, reused=0, computed=6, repaired=0)
    assert any('rebuild=True' in m for m in logs)


def test_another_e2e_learner_is_refused_while_a_run_uses_the_cache(
        tmp_path, data_root, ckpt, logs):
    """A second run with another E2E learner on the same cache folder is
    refused, naming the first run, instead of rebuilding under it."""
    cache_dir = str(tmp_path / 'cache')
    model, dataset = build(ckpt, data_root, cache_dir)
    first = E2ECacheBuilder(cache_dir)
    run_builder(first, tmp_path / 'first', model, dataset)
    store = E2ECacheStore(cache_dir)
    digest = store.read_meta()['digest']
    assert os.listdir(store.users_dir) == [osp.basename(first.user_file)]
    # the first run, in another live process (this test's child)
    sleeper = subprocess.Popen(['sleep', '60'])
    first.release()
    assert first.user_file is None
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
            run_builder(
                E2ECacheBuilder(cache_dir), tmp_path / 'second', model,
                dataset)
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
    run_builder(E2ECacheBuilder(cache_dir), tmp_path, model, dataset)
    # once the first run's process is gone, its user file is removed
    model, dataset = build(other, data_root, cache_dir)
    builder = E2ECacheBuilder(cache_dir)
    stats = run_builder(builder, tmp_path / 'second', model, dataset)
    assert stats['computed'] == 6
    assert not osp.exists(other_user)
    builder.release()


def test_invalid_entries_are_recomputed(tmp_path, data_root, ckpt, logs):
    cache_dir = str(tmp_path / 'cache')
    model, dataset = build(ckpt, data_root, cache_dir)
    run_builder(E2ECacheBuilder(cache_dir), tmp_path, model, dataset)
    store = E2ECacheStore(cache_dir)
    paths = sorted(store.entry_keys_on_disk().values())
    with open(paths[0], 'r+b') as f:  # truncated
        f.truncate(os.path.getsize(paths[0]) // 2)
    os.remove(paths[1])  # missing
    logs.clear()
    stats = run_builder(E2ECacheBuilder(cache_dir), tmp_path, model, dataset)
    assert counts(stats) == dict(images=6, reused=4, computed=2, repaired=1)
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
    monkeypatch.setattr(builder_module, 'get_dist_info', lambda: (0, 2))
    builder = E2ECacheBuilder(cache_dir)
    stats = run_builder(builder, tmp_path, model, dataset)
    assert stats['computed'] == 3
    assert not store.read_meta()['complete']
    present = [
        osp.isfile(store.entry_path(store.key_for(p, data_root)))
        for p in paths
    ]
    assert present == [True, False] * 3
    monkeypatch.setattr(builder_module, 'get_dist_info', lambda: (1, 2))
    stats = run_builder(builder, tmp_path, model, dataset)
    assert stats['computed'] == 3 and stats['reused'] == 0
    assert len(store.entry_keys_on_disk()) == 6


def test_slide_mode_entries(tmp_path, data_root, ckpt, logs):
    e2e = fcn_e2e(num_classes=K)
    e2e['test_cfg'] = dict(mode='slide', crop_size=(16, 16), stride=(8, 8))
    model, dataset = build(ckpt, data_root, str(tmp_path / 'c'), e2e=e2e)
    model.eval()
    run_builder(E2ECacheBuilder(str(tmp_path / 'c')), tmp_path, model, dataset)
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
    run_builder(E2ECacheBuilder(cache_dir), tmp_path, model, dataset)
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
    run_builder(E2ECacheBuilder(cache_dir), tmp_path, model, dataset)
    assert len(outputs) == 6  # one call per image
    store = E2ECacheStore(cache_dir)
    meta = store.read_meta()
    first = sorted(dataset.get_data_info(i)['img_path'] for i in range(6))[0]
    cached, _ = store.read_entry(store.key_for(first, data_root), meta=meta)
    expected = F.avg_pool2d(outputs[0], 4)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(cached / 255., expected, atol=0.5 / 255 + 1e-6)


def test_out_of_fold_entries(tmp_path, data_root, ckpt, logs):
    """Each image's entry comes from the learner of the fold that holds it
    out, named in its header; the model's own weights are back after."""
    cache_dir = str(tmp_path / 'cache')
    model, dataset = build(ckpt, data_root, cache_dir)
    paths = sorted(dataset.get_data_info(i)['img_path'] for i in range(6))
    names = [osp.splitext(osp.basename(p))[0] for p in paths]
    held_out_file = tmp_path / 'fold0.txt'
    held_out_file.write_text('\n'.join(names[:2]) + '\n')
    folds = [
        dict(
            checkpoint=save_e2e_checkpoint(
                str(tmp_path / 'fold0.pth'), seed=1),
            held_out=str(held_out_file)),
        dict(
            checkpoint=save_e2e_checkpoint(
                str(tmp_path / 'fold1.pth'), seed=2),
            held_out=names[2:])
    ]
    own = {k: v.clone() for k, v in model.e2e.state_dict().items()}
    builder = E2ECacheBuilder(cache_dir, out_of_fold=folds)
    stats = run_builder(builder, tmp_path, model, dataset)
    assert counts(stats) == dict(images=6, reused=0, computed=6, repaired=0)
    for k, v in model.e2e.state_dict().items():
        assert torch.equal(v, own[k]), k
    store = E2ECacheStore(cache_dir)
    meta = store.read_meta()
    assert [f['held_out'] for f in meta['fingerprint']['out_of_fold']
            ] == [sorted(names[:2]), sorted(names[2:])]
    fold1 = MODELS.build(model_cfg(folds[1]['checkpoint']))
    for i, path in enumerate(paths):
        cached, header = store.read_entry(
            store.key_for(path, data_root), meta=meta)
        assert header['learner'] == ('fold0' if i < 2 else 'fold1')
    np.testing.assert_allclose(
        cached / 255.,
        e2e_probs_direct(fold1, paths[-1]).permute(1, 2, 0).numpy(),
        atol=0.5 / 255 + 1e-6)
    # every image must be held out by exactly one fold
    with pytest.raises(ValueError, match='held out by 0 folds'):
        run_builder(
            E2ECacheBuilder(cache_dir, out_of_fold=folds[1:]), tmp_path, model,
            dataset)
    with pytest.raises(ValueError, match='held out by folds 0 and 1'):
        run_builder(
            E2ECacheBuilder(
                cache_dir,
                out_of_fold=[folds[0],
                             dict(folds[1], held_out=names)]), tmp_path, model,
            dataset)


KILL_SCRIPT = textwrap.dedent("""
    import sys
    import time
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS, MODELS

    import mmseg_resensemble  # noqa: F401
    from mmseg_resensemble.e2e_cache import E2ECacheBuilder, E2ECacheStore
    from tests.test_e2e_cache.helpers import (dataset_cfg, model_cfg,
                                              run_builder)

    init_default_scope('mmseg')
    ckpt, root, cache_dir, work_dir = sys.argv[1:5]
    write = E2ECacheStore.write_entry

    def slow_write(self, *args, **kwargs):
        path = write(self, *args, **kwargs)
        time.sleep(0.05)  # give the parent time to kill us mid-way
        return path

    E2ECacheStore.write_entry = slow_write
    run_builder(E2ECacheBuilder(cache_dir), work_dir,
                MODELS.build(model_cfg(ckpt)),
                DATASETS.build(dataset_cfg(root, [])))
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
            key = json.loads(str(npz['header']))['key']
        store.read_entry(key, meta=meta)
    # the rerun computes only what is missing
    model = MODELS.build(model_cfg(ckpt))
    dataset = DATASETS.build(dataset_cfg(root, []))
    stats = run_builder(E2ECacheBuilder(cache_dir), tmp_path, model, dataset)
    assert counts(stats) == dict(
        images=40, reused=done, computed=40 - done, repaired=0)
    assert store.read_meta()['complete']
    assert len(store.entry_keys_on_disk()) == 40


def test_misconfiguration(tmp_path, data_root, ckpt):
    a = str(tmp_path / 'a')
    model, dataset = build(ckpt, data_root, a)
    with pytest.raises(ValueError, match='disagree'):
        run_builder(
            E2ECacheBuilder(str(tmp_path / 'b')), tmp_path, model, dataset)
    with pytest.raises(ValueError, match='topk=5 must be < num_classes=5'):
        run_builder(E2ECacheBuilder(a, topk=5), tmp_path, model, dataset)
    with pytest.raises(ValueError, match='TestTimeAug'):
        run_builder(
            E2ECacheBuilder(a, pipeline=[dict(type='TestTimeAug')]), tmp_path,
            model, dataset)
    with pytest.raises(ValueError, match='no test_dataloader'):
        E2ECacheBuilder(a).build(model, dataset, cfg=None)
    with pytest.raises(TypeError, match='ResEnsembleSegmentor'):
        run_builder(E2ECacheBuilder(a), tmp_path, model.e2e, dataset)
    with pytest.raises(ValueError, match='topk'):
        E2ECacheBuilder(a, topk=0)
    with pytest.raises(ValueError, match='pipeline must be a list'):
        E2ECacheBuilder(a, pipeline=dict(type='LoadImageFromFile'))
    with pytest.raises(FileNotFoundError, match='does not exist'):
        E2ECacheBuilder(
            a, out_of_fold=[dict(checkpoint='nowhere.pth', held_out=['x'])])
    with pytest.raises(ValueError, match=r'out_of_fold\[0\] must be'):
        E2ECacheBuilder(a, out_of_fold=[dict(checkpoint=ckpt)])
    # the directory is explicit: no default, none filled in
    for bad in (None, ''):
        with pytest.raises(ValueError, match='cache_dir must be a non-empty'):
            E2ECacheBuilder(bad)
