# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""Every shipped config can ``--tta``, and checks its data before
training."""
import pytest
from mmengine.registry import init_default_scope
from mmseg.registry import TRANSFORMS

import mmseg_resensemble  # noqa: F401
from mmseg_resensemble.datasets.transforms import CheckImageAndLabel
from tests.test_configs.test_configs_build import CONFIGS, load


def types(pipeline):
    return [t['type'] for t in pipeline]


@pytest.mark.parametrize('name', CONFIGS)
def test_every_config_has_a_tta_pipeline_that_builds(name):
    cfg = load(name)
    assert 'tta_model' in cfg and 'tta_pipeline' in cfg, name
    init_default_scope('mmseg')
    for t in cfg.tta_pipeline:
        TRANSFORMS.build(t)


@pytest.mark.parametrize('name', CONFIGS)
def test_every_config_checks_its_training_data(name):
    """Before training (the sanity hook's scan), or while training
    (CheckImageAndLabel right after LoadAnnotations, with the class
    count)."""
    cfg = load(name)
    pipeline = cfg.train_dataloader.dataset.get('pipeline', [])
    hooks = [
        h for h in cfg.get('custom_hooks', [])
        if h['type'] == 'ResEnsembleSanityCheckHook'
    ]
    scanned = any(h.get('scan_files') for h in hooks)
    if 'CheckImageAndLabel' in types(pipeline):
        at = types(pipeline).index('CheckImageAndLabel')
        assert types(pipeline)[at - 1] == 'LoadAnnotations', name
        check = TRANSFORMS.build(pipeline[at])
        assert isinstance(check, CheckImageAndLabel)
        num_classes = (
            cfg.model.decode_head.num_classes
            if 'decode_head' in cfg.model else None)
        assert check.num_classes == num_classes, name
    else:
        assert scanned, f'{name}: no CheckImageAndLabel and no scan'
    if cfg.model.type == 'ResEnsembleSegmentor':
        assert scanned, name
