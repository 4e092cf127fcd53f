# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""The tools' shared config loading and --e2e-cache-dir."""
import argparse
import os.path as osp

import pytest

from mmseg_resensemble.utils import add_config_args, load_tool_config

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
