# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""εθ is a registered module: a config alone swaps it, and checkpoints from
before it was one still load."""
import pytest
import torch
import torch.nn as nn
from mmengine.runner import load_checkpoint
from mmseg.models.utils import resize
from mmseg.registry import MODELS

import mmseg_resensemble  # noqa: F401
from mmseg_resensemble.models.denoisers import (DilatedResDenoiser,
                                                SeparableTimestepBlock)
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
                 align_corners=False,
                 width=4):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, width, 1)
        self.out = nn.Conv2d(
            width + 2 * num_classes, num_classes, 3, padding=1)

    def encode_condition(self, feats):
        return self.proj(feats[0])

    def forward(self, cond, x_hat, x_t, t):
        return self.out(torch.cat([cond, x_t, x_hat], 1))


def test_a_config_swaps_the_denoiser():
    head = build_head(denoiser=dict(type='TinyTestDenoiser', width=5))
    assert isinstance(head.denoiser, TinyTestDenoiser)
    assert head.denoiser.proj.out_channels == 5
    assert not any(isinstance(m, DilatedResDenoiser) for m in head.modules())
    feats, probs, labels = random_inputs()
    loss = head.loss(feats, probs, samples_with_gt(labels), None)
    loss['loss_diffusion'].backward()
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


def levels(sizes=((8, 12), (4, 6), (2, 3)), widths=(5, 7, 4)):
    torch.manual_seed(0)
    return [torch.randn(2, c, *hw) for c, hw in zip(widths, sizes)]


def one_block_denoiser(in_channels, **kwargs):
    return DilatedResDenoiser(
        in_channels=in_channels,
        channels=8,
        num_classes=3,
        num_blocks=1,
        dilations=(1, ),
        norm_cfg=dict(type='GN', num_groups=4),
        **kwargs)


@pytest.mark.parametrize('align_corners', [False, True])
def test_condition_levels_equal_the_projection_of_the_concatenation(
        align_corners):
    """Each level projected at its own resolution, resized and summed is
    the 1x1 projection of MMSeg's resize_concat (the first head's path,
    so its checkpoints give the same condition)."""
    feats = levels()
    denoiser = one_block_denoiser(16, align_corners=align_corners)
    nn.init.normal_(denoiser.cond_proj.conv.weight)
    concat = torch.cat([
        resize(
            f,
            size=feats[0].shape[-2:],
            mode='bilinear',
            align_corners=align_corners) for f in feats
    ], 1)
    expected = denoiser.cond_proj(concat)
    assert torch.allclose(
        denoiser.encode_condition(feats), expected, atol=1e-5)


def test_condition_levels_must_match_in_channels():
    denoiser = one_block_denoiser(15)
    with pytest.raises(ValueError, match=r'\[5, 7, 4\] channels, 16'):
        denoiser.encode_condition(levels())


def test_head_passes_the_selected_levels_unresized():
    head = build_head(
        in_channels=[5, 4], in_index=[0, 2], input_transform='resize_concat')
    feats = levels()
    cond = head.encode_condition(feats, (8, 12))
    assert cond.shape == (2, 16, 8, 12)
    concat = torch.cat([
        feats[0],
        resize(feats[2], size=(8, 12), mode='bilinear', align_corners=False)
    ], 1)
    assert torch.allclose(cond, head.denoiser.cond_proj(concat), atol=1e-5)


def test_separable_blocks_start_as_the_identity_and_train():
    head = build_head(
        denoiser=dict(
            type='DilatedResDenoiser',
            num_blocks=2,
            dilations=(1, 2),
            block_type='separable',
            expand_ratio=3))
    blocks = head.denoiser.blocks
    assert all(isinstance(b, SeparableTimestepBlock) for b in blocks)
    assert blocks[0].dwconv.groups == 16 and blocks[1].dwconv.dilation == (2,
                                                                           2)
    assert blocks[0].pwconv1.out_channels == 48
    x, temb = torch.randn(2, 16, 5, 6), torch.randn(2, 32)
    assert torch.equal(blocks[0](x, temb), x)
    feats, probs, labels = random_inputs()
    loss = head.loss(feats, probs, samples_with_gt(labels), None)
    loss['loss_diffusion'].backward()
    assert blocks[0].pwconv2.weight.grad.abs().sum() > 0
    out = head.predict(feats, probs, (8, 8), dict(sampler='ddim', num_steps=2))
    assert out['probs'].shape == (2, 3, 8, 8)


def test_separable_blocks_cost_less():

    def macs(block_type):
        d = DilatedResDenoiser(
            in_channels=8,
            channels=128,
            num_classes=3,
            block_type=block_type,
            norm_cfg=dict(type='GN', num_groups=8))
        return sum(m.weight.numel() for m in d.blocks.modules()
                   if isinstance(m, nn.Conv2d))

    # per pixel: 4 blocks x (18 C^2) against 4 x (4 C^2 + 9 C) at r = 2
    assert macs('dense') == 4 * 18 * 128**2
    assert macs('separable') == 4 * (4 * 128**2 + 9 * 128)


def test_unknown_block_type_is_named():
    with pytest.raises(ValueError, match="block_type='mbconv'"):
        DilatedResDenoiser(
            in_channels=8, channels=16, num_classes=3, block_type='mbconv')
