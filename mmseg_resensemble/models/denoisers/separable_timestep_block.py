# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""A depthwise-separable residual block conditioned on the diffusion step."""
import torch.nn as nn
from mmcv.cnn import build_activation_layer, build_norm_layer
from mmengine.model import constant_init
from mmseg.utils import ConfigType
from torch import Tensor


class SeparableTimestepBlock(nn.Module):
    """Pre-activation inverted residual block with FiLM on the step.

    ``x + pw2(act(pw1(film(dw(act(norm(x)))))))``: a depthwise (dilated)
    3x3 conv mixes space, FiLM adds the step, two 1x1 convs
    (C -> r·C -> C) mix channels, as MobileNetV2's and ConvNeXt's blocks.
    One norm and ``4·C² + 9·C`` multiply-adds per pixel at ``r = 2``,
    against two norms and ``18·C²`` for :class:`TimestepResBlock`.

    Args:
        channels (int): Width C.
        time_embed_dims (int): Size of the step embedding.
        dilation (int): Dilation of the depthwise 3x3 conv.
        norm_cfg (dict): Norm layer config.
        act_cfg (dict): Activation config.
        expand_ratio (int): r, the width of the pointwise MLP in units of
            C. Defaults to 2.
    """

    def __init__(self,
                 channels: int,
                 time_embed_dims: int,
                 dilation: int,
                 norm_cfg: ConfigType,
                 act_cfg: ConfigType,
                 expand_ratio: int = 2) -> None:
        super().__init__()
        if expand_ratio < 1:
            raise ValueError(f'expand_ratio must be >= 1, got {expand_ratio}')
        hidden = expand_ratio * channels
        self.norm = build_norm_layer(norm_cfg, channels)[1]
        self.act = build_activation_layer(act_cfg)
        self.dwconv = nn.Conv2d(
            channels,
            channels,
            3,
            padding=dilation,
            dilation=dilation,
            groups=channels)
        self.film = nn.Sequential(
            build_activation_layer(act_cfg),
            nn.Linear(time_embed_dims, 2 * channels))
        self.pwconv1 = nn.Conv2d(channels, hidden, 1)
        self.pwconv2 = nn.Conv2d(hidden, channels, 1)

    def zero_init(self) -> None:
        """Start as the identity (as improved-diffusion does)."""
        constant_init(self.film[-1], 0.)
        constant_init(self.pwconv2, 0.)

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        """x: (N, C, h, w); temb: (N, E). Returns (N, C, h, w)."""
        h = self.dwconv(self.act(self.norm(x)))
        gamma, beta = self.film(temb)[:, :, None, None].chunk(2, dim=1)
        h = h * (1 + gamma) + beta
        return x + self.pwconv2(self.act(self.pwconv1(h)))
