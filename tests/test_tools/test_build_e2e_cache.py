# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""tools/build_e2e_cache.py builds the cache a training then reuses."""
import os.path as osp
import runpy
import sys

import pytest
from mmengine.config import Config

from mmseg_resensemble.datasets import generate_shapes_dataset
from mmseg_resensemble.e2e_cache import E2ECacheStore
from tests.test_tools.test_train_test_tools import ROOT

CACHED = ('configs/resensemble/'
          'resensemble-cached_fcn-m-v2-d8_1xb8-2k_shapes-96x128.py')


def build_cache(monkeypatch, data_root, work_dir):
    monkeypatch.setattr(sys, 'argv', [
        'build_e2e_cache.py',
        osp.join(ROOT, CACHED), '--work-dir', work_dir, '--e2e-cache-dir',
        osp.join(work_dir, 'e2e_cache'), '--cfg-options',
        'model.e2e_checkpoint=None', 'model.allow_random_e2e=True',
        f'train_dataloader.dataset.data_root={data_root}',
        f'val_dataloader.dataset.data_root={data_root}',
        f'test_dataloader.dataset.data_root={data_root}',
        'train_dataloader.num_workers=0',
        'train_dataloader.persistent_workers=False'
    ])
    tool = runpy.run_path(osp.join(ROOT, 'tools', 'build_e2e_cache.py'))
    return tool['main']()


def test_build_then_reuse(tmp_path, monkeypatch):
    data_root = generate_shapes_dataset(
        str(tmp_path / 'data'), dict(train=3, val=2), seed=1)
    work_dir = str(tmp_path / 'work')
    stats = build_cache(monkeypatch, data_root, work_dir)
    assert (stats['images'], stats['computed']) == (3, 3)
    store = E2ECacheStore(osp.join(work_dir, 'e2e_cache'))
    meta = store.read_meta()
    assert meta['complete'] and meta['num_images'] == 3
    assert len(store.entry_keys_on_disk()) == 3
    stats = build_cache(monkeypatch, data_root, work_dir)
    assert (stats['reused'], stats['computed']) == (3, 0)


def test_config_without_the_hook_is_refused():
    tool = runpy.run_path(osp.join(ROOT, 'tools', 'build_e2e_cache.py'))
    with pytest.raises(ValueError, match='0 E2ECacheHook'):
        tool['cache_hook_cfg'](Config(dict(custom_hooks=[])))
