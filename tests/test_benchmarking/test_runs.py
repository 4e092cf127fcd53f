# Copyright (c) mmseg-resensemble contributors. All rights reserved.
import pytest
import torch
from mmengine.config import Config
from mmseg.registry import MODELS

from mmseg_resensemble.benchmarking import load_resensemble
from tests.tiny_models import fcn_e2e, head_cfg

META = dict(classes=('a', 'b', 'c'), palette=[[0, 0, 0]] * 3)


def config(channels):
    return Config(
        dict(
            default_scope='mmseg',
            model=dict(
                type='ResEnsembleSegmentor',
                e2e=fcn_e2e(),
                decode_head=head_cfg(channels=channels),
                test_cfg=dict(sampler='ddim', num_steps=1))))


@pytest.fixture
def checkpoint(tmp_path):
    model = MODELS.build(config(16).model)
    path = str(tmp_path / 'iter_1.pth')
    torch.save(
        dict(state_dict=model.state_dict(), meta=dict(dataset_meta=META)),
        path)
    return path, model


def test_loads_the_run_with_its_test_cfg(checkpoint):
    path, trained = checkpoint
    model = load_resensemble(config(16), path, num_steps=2)
    assert model.dataset_meta == META
    assert model.test_cfg['num_steps'] == 2
    assert not model.training
    for key, value in trained.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value)


def test_a_checkpoint_of_another_head_size_raises(checkpoint):
    path, _ = checkpoint
    with pytest.raises(ValueError) as info:
        load_resensemble(config(8), path)
    message = str(info.value)
    assert f'checkpoint {path} does not fit' in message
    assert 'size mismatch' in message and 'decode_head' in message
