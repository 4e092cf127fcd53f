# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""GroupNorm whose statistics use the whole accelerator at batch 1."""
import torch
import torch.nn as nn
from mmengine.registry import MODELS as NORM_LAYERS
from torch import Tensor


@NORM_LAYERS.register_module('ParallelGN')
class ParallelGroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` (same parameters, same result) that computes its
    statistics as one ``var_mean`` reduction on accelerators.

    PyTorch's GroupNorm kernel on CUDA reduces each (sample, group) row
    with one thread block: 8 blocks for one image and 8 groups, on a GPU
    of over a hundred multiprocessors. At a 256x512 working resolution
    one call took milliseconds (docs/benchmarks.md, section 8).
    ``torch.var_mean`` splits long rows across the device; the affine
    normalisation is then one ``addcmul`` pass. On the CPU the native
    kernel is used. Statistics are float32 under autocast (as autocast
    runs ``group_norm``), and so is the output.

    Registered in mmengine's root registry as ``'ParallelGN'``, where
    mmcv's ``build_norm_layer`` looks (``norm_cfg=dict(type='ParallelGN',
    num_groups=8)``); its state dict keys and its ``ConvModule`` name
    (``gn``) are GroupNorm's, so checkpoints of either load into the other.

    Args:
        num_channels (int): C (first, as mmcv builds norm layers).
        num_groups (int): Number of groups; must divide C.
        eps (float): Added to the variance. Defaults to 1e-5.
        affine (bool): Learn a per-channel scale and shift. Defaults to
            True.
    """

    def __init__(self,
                 num_channels: int,
                 num_groups: int,
                 eps: float = 1e-5,
                 affine: bool = True) -> None:
        super().__init__(num_groups, num_channels, eps=eps, affine=affine)

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, C, *) -> (N, C, *): the native kernel on the CPU,
        :meth:`forward_split` elsewhere."""
        if x.device.type == 'cpu':
            return super().forward(x)
        return self.forward_split(x)

    def forward_split(self, x: Tensor) -> Tensor:
        """GroupNorm of x (N, C, *) as one ``var_mean`` and one
        ``addcmul``; float32 out."""
        n, c = x.shape[:2]
        g = self.num_groups
        rows = x.reshape(n, g, -1).float()
        var, mean = torch.var_mean(rows, dim=-1, unbiased=False)
        # per (sample, channel): y = x * scale + shift
        scale = torch.rsqrt(var + self.eps).repeat_interleave(c // g, dim=1)
        shift = -mean.repeat_interleave(c // g, dim=1) * scale
        if self.affine:
            scale = scale * self.weight.float()
            shift = shift * self.weight.float() + self.bias.float()
        shape = (n, c) + (1, ) * (x.dim() - 2)
        return torch.addcmul(
            shift.reshape(shape), x.float(), scale.reshape(shape))
