# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""Pointing a config's E2E cache at another directory."""
import pytest
from mmengine.config import Config

from mmseg_resensemble.e2e_cache import (config_type_name, e2e_cache_hooks,
                                         set_e2e_cache_dir)


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


def test_e2e_cache_hooks_by_name_or_class():
    from mmseg_resensemble.e2e_cache import E2ECacheHook
    hooks = [
        dict(type='E2ECacheHook', cache_dir='a'),
        dict(type=E2ECacheHook, cache_dir='b'),
        dict(type='RandomStateHook')
    ]
    assert [h['cache_dir']
            for h in e2e_cache_hooks(dict(custom_hooks=hooks))] == ['a', 'b']
    assert e2e_cache_hooks(dict()) == []
    assert config_type_name(dict(type=E2ECacheHook)) == 'E2ECacheHook'
    assert config_type_name('not a dict') == ''
