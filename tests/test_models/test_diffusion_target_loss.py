# Copyright (c) mmseg-resensemble contributors. All rights reserved.
import pytest
import torch
from mmseg.registry import MODELS

from mmseg_resensemble.models.losses import DiffusionTargetLoss


def test_the_former_name_builds_the_same_loss():
    """`NoisePredictionLoss`, the former name that older configs and the
    configs saved in checkpoints use, builds the same loss."""
    torch.manual_seed(0)
    pred, target = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    weight = (torch.rand(2, 1, 4, 5) > 0.3).float()
    new = MODELS.build(dict(type='DiffusionTargetLoss', loss_weight=2.))
    old = MODELS.build(dict(type='NoisePredictionLoss', loss_weight=2.))
    assert isinstance(new, DiffusionTargetLoss)
    assert isinstance(old, DiffusionTargetLoss)
    assert new.loss_name == old.loss_name == 'loss_diffusion'
    for w in (None, weight):
        assert torch.equal(new(pred, target, w), old(pred, target, w))


def test_the_loss_is_the_mse_over_valid_pixels():
    loss = DiffusionTargetLoss(loss_weight=0.5, loss_name='loss_x0')
    assert loss.loss_name == 'loss_x0'
    pred, target = torch.zeros(1, 2, 2, 2), torch.ones(1, 2, 2, 2)
    target[..., 0, 0] = 3.  # error 9 on an ignored pixel
    weight = torch.ones(1, 1, 2, 2)
    weight[..., 0, 0] = 0
    assert loss(pred, target, weight).item() == pytest.approx(0.5)
    assert loss(pred, target).item() == pytest.approx(0.5 * (2 * 9 + 6) / 8)


def test_the_loss_name_must_start_with_loss():
    with pytest.raises(ValueError, match='loss_'):
        DiffusionTargetLoss(loss_name='diffusion')
