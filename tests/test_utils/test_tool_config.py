# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""The tools' shared config loading and --e2e-cache-dir."""
import argparse
import os.path as osp

import pytest
from mmengine.config import Config

from mmseg_resensemble.utils import (add_config_args, load_tool_config,
                                     set_e2e_cache_dir)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CACHED = osp.join(
    ROOT, 'configs/resensemble/'
    'resensemble-cached_fcn-m-v2-d8_1xb8-2k_shapes-96x128.py')


def parse(argv, **kwargs):
    parser = argparse.ArgumentParser()
    parser.add_argument('config')
    return add_config_args(parser, **kwargs).parse_args(argv)


def cache_dirs(cfg):
    hooks = [
        h['cache_dir'] for h in cfg.custom_hooks if h['type'] == 'E2ECacheHook'
    ]
    loads = [
        t['cache_dir'] for t in cfg.train_dataloader.dataset.pipeline
        if t['type'] == 'LoadE2ECache'
    ]
    return hooks, loads


def test_the_config_names_one_cache_dir():
    cfg = load_tool_config(parse([CACHED]))
    hooks, loads = cache_dirs(cfg)
    assert len(hooks) == len(loads) == 1 and hooks == loads
    assert cfg.work_dir == osp.join('./work_dirs',
                                    osp.splitext(osp.basename(CACHED))[0])
    assert cfg.launcher == 'none'


def test_options_and_e2e_cache_dir(tmp_path):
    args = parse([
        CACHED, '--work-dir',
        str(tmp_path), '--e2e-cache-dir',
        str(tmp_path / 'c'), '--cfg-options', 'train_cfg.max_iters=7',
        '--launcher', 'pytorch'
    ],
                 e2e_cache_dir=True)
    cfg = load_tool_config(args)
    assert cache_dirs(cfg) == ([str(tmp_path / 'c')], [str(tmp_path / 'c')])
    assert cfg.work_dir == str(tmp_path)
    assert cfg.train_cfg.max_iters == 7 and cfg.launcher == 'pytorch'
    # tools without a cache have no such option
    with pytest.raises(SystemExit):
        parse([CACHED, '--e2e-cache-dir', 'x'])


def test_set_e2e_cache_dir_reaches_wrapped_datasets():
    load = dict(type='LoadE2ECache', cache_dir='old')
    cfg = Config(
        dict(
            custom_hooks=[dict(type='E2ECacheHook', cache_dir='old')],
            train_dataloader=dict(
                dataset=dict(
                    type='ConcatDataset',
                    datasets=[
                        dict(pipeline=[dict(type='LoadImageFromFile'), load]),
                        dict(
                            type='RepeatDataset',
                            dataset=dict(pipeline=[dict(load)]))
                    ]))))
    assert set_e2e_cache_dir(cfg, 'new') == 3
    assert cfg.custom_hooks[0].cache_dir == 'new'
    inner = cfg.train_dataloader.dataset.datasets
    assert inner[0].pipeline[1].cache_dir == 'new'
    assert inner[1].dataset.pipeline[0].cache_dir == 'new'


def test_set_e2e_cache_dir_errors():
    with pytest.raises(ValueError, match='no E2ECacheHook'):
        set_e2e_cache_dir(Config(dict(custom_hooks=[])), 'x')
    with pytest.raises(ValueError, match="got ''"):
        set_e2e_cache_dir(Config(dict()), '')
