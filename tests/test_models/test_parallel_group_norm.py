# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""ParallelGroupNorm is GroupNorm: same result, gradients and checkpoint
keys; only the kernels differ off the CPU."""
import pytest
import torch
import torch.nn as nn
from mmcv.cnn import ConvModule, build_norm_layer

from mmseg_resensemble.models.utils import ParallelGroupNorm


def pair(channels=32, groups=8, affine=True):
    torch.manual_seed(0)
    ref = nn.GroupNorm(groups, channels, affine=affine)
    if affine:
        nn.init.normal_(ref.weight)
        nn.init.normal_(ref.bias)
    norm = build_norm_layer(
        dict(type='ParallelGN', num_groups=groups, affine=affine), channels)[1]
    assert isinstance(norm, ParallelGroupNorm)
    norm.load_state_dict(ref.state_dict())
    return ref, norm


@pytest.mark.parametrize('affine', [True, False])
@pytest.mark.parametrize('shape', [(1, 32, 7, 9), (3, 32, 5, 4, 2)])
def test_split_statistics_equal_group_norm(affine, shape):
    ref, norm = pair(affine=affine)
    x = (3 * torch.randn(shape) + 1).requires_grad_()
    y = x.detach().clone().requires_grad_()
    torch.testing.assert_close(
        norm.forward_split(y), ref(x), atol=1e-5, rtol=1e-5)
    ref(x).square().sum().backward()
    norm.forward_split(y).square().sum().backward()
    torch.testing.assert_close(y.grad, x.grad, atol=1e-4, rtol=1e-4)
    if affine:
        assert norm.weight.grad is not None


def test_bf16_input_gives_float32_statistics_and_output():
    ref, norm = pair()
    x = torch.randn(1, 32, 6, 6).bfloat16()
    out = norm.forward_split(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref(x.float()), atol=1e-5, rtol=1e-5)


def test_cpu_uses_the_native_kernel_and_checkpoints_are_group_norms():
    ref, norm = pair()
    x = torch.randn(2, 32, 4, 4)
    assert torch.equal(norm(x), ref(x))
    conv = ConvModule(3, 32, 1, norm_cfg=dict(type='ParallelGN', num_groups=8))
    assert set(conv.state_dict()) == {'conv.weight', 'gn.weight', 'gn.bias'}


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason='needs a CUDA device')
def test_on_cuda_the_split_statistics_run_and_match():
    ref, norm = pair()
    ref, norm = ref.cuda(), norm.cuda()
    x = torch.randn(1, 32, 64, 128, device='cuda')
    torch.testing.assert_close(norm(x), ref(x), atol=1e-4, rtol=1e-4)
