# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""εθ is a registered module: a config alone swaps it, and checkpoints from
before it was one still load."""
import torch
import torch.nn as nn
from mmengine.runner import load_checkpoint
from mmseg.registry import MODELS

import mmseg_resensemble  # noqa: F401
from mmseg_resensemble.models.denoisers import DilatedResDenoiser
from tests.test_models.test_residual_diffusion_head import (build_head,
                                                            random_inputs,
                                                            samples_with_gt)
from tests.tiny_models import fcn_e2e, head_cfg


@MODELS.register_module(force=True)
class TinyTestDenoiser(nn.Module):
    """The smallest εθ: one conv over [x_t, x̂0, condition]."""

    def __init__(self,
                 in_channels,
                 channels,
                 num_classes,
                 condition_on_e2e,
                 norm_cfg=None,
                 act_cfg=None,
                 width=4):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, width, 1)
        self.out = nn.Conv2d(
            width + 2 * num_classes, num_classes, 3, padding=1)

    def encode_condition(self, feats):
        return self.proj(feats)

    def forward(self, cond, x_hat, x_t, t):
        return self.out(torch.cat([cond, x_t, x_hat], 1))


def test_a_config_swaps_the_denoiser():
    head = build_head(denoiser=dict(type='TinyTestDenoiser', width=5))
    assert isinstance(head.denoiser, TinyTestDenoiser)
    assert head.denoiser.proj.out_channels == 5
    assert not any(isinstance(m, DilatedResDenoiser) for m in head.modules())
    feats, probs, labels = random_inputs()
    loss = head.loss(feats, probs, samples_with_gt(labels), None)
    loss['loss_noise'].backward()
    assert head.denoiser.out.weight.grad is not None
    out = head.predict(feats, probs, (8, 8), dict(sampler='ddim', num_steps=2))
    assert out['probs'].shape == (2, 3, 8, 8)
    refiner = build_head(
        type='E2ERefinerHead', denoiser=dict(type='TinyTestDenoiser'))
    assert isinstance(refiner.denoiser, TinyTestDenoiser)
    assert not hasattr(refiner, 'diffusion')


def test_head_args_fill_the_denoiser_config():
    head = build_head()
    d = head.denoiser
    assert isinstance(d, DilatedResDenoiser)
    assert d.cond_proj.conv.in_channels == 8
    assert d.conv_seg.out_channels == 3 and len(d.blocks) == 2
    assert not hasattr(head, 'conv_seg')
    # the old head-level arguments still build, into the denoiser
    old = build_head(
        denoiser=dict(type='DilatedResDenoiser'),
        num_blocks=3,
        dilations=(1, 2, 1),
        prediction_type='sample')
    assert len(old.denoiser.blocks) == 3
    assert old.diffusion.prediction_type == 'sample'


def old_layout(state_dict, prefix=''):
    """The state dict as the head stored it before the denoiser module."""
    return {
        k.replace(f'{prefix}denoiser.', prefix, 1): v
        for k, v in state_dict.items()
    }


def test_old_head_state_dict_loads():
    src, dst = build_head(), build_head()
    for p in src.parameters():
        nn.init.normal_(p)
    old = old_layout(src.state_dict())
    assert 'blocks.0.conv1.conv.weight' in old and 'conv_seg.weight' in old
    result = dst.load_state_dict(old, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k


def test_old_segmentor_checkpoint_loads_with_mmengine(tmp_path):
    cfg = dict(
        type='ResEnsembleSegmentor',
        e2e=fcn_e2e(),
        decode_head=head_cfg(),
        test_cfg=dict(sampler='ddim', num_steps=2))
    src, dst = MODELS.build(cfg), MODELS.build(cfg)
    for p in src.decode_head.parameters():
        nn.init.normal_(p)
    state = old_layout(src.state_dict(), 'decode_head.')
    assert 'decode_head.blocks.0.conv1.conv.weight' in state
    path = str(tmp_path / 'iter_1.pth')
    torch.save(dict(state_dict=state, meta=dict()), path)
    load_checkpoint(dst, path, map_location='cpu', strict=True)
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k
