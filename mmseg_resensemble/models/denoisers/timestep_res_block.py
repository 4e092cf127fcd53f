# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""A residual block conditioned on the diffusion step."""
import torch.nn as nn
from mmcv.cnn import ConvModule, build_activation_layer
from mmengine.model import constant_init
from mmseg.utils import ConfigType
from torch import Tensor


class TimestepResBlock(nn.Module):
    """Pre-activation residual block with FiLM conditioning on the step.

    Args:
        channels (int): Width C.
        time_embed_dims (int): Size of the step embedding.
        dilation (int): Dilation of the first 3x3 conv.
        norm_cfg (dict): Norm layer config.
        act_cfg (dict): Activation config.
    """

    def __init__(self, channels: int, time_embed_dims: int, dilation: int,
                 norm_cfg: ConfigType, act_cfg: ConfigType) -> None:
        super().__init__()
        kwargs = dict(
            norm_cfg=norm_cfg, act_cfg=act_cfg, order=('norm', 'act', 'conv'))
        self.conv1 = ConvModule(
            channels,
            channels,
            3,
            padding=dilation,
            dilation=dilation,
            **kwargs)
        self.film = nn.Sequential(
            build_activation_layer(act_cfg),
            nn.Linear(time_embed_dims, 2 * channels))
        self.conv2 = ConvModule(channels, channels, 3, padding=1, **kwargs)

    def zero_init(self) -> None:
        """Start as the identity (as improved-diffusion does)."""
        constant_init(self.film[-1], 0.)
        constant_init(self.conv2.conv, 0.)

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        """x: (N, C, h, w); temb: (N, E). Returns (N, C, h, w)."""
        h = self.conv1(x)
        gamma, beta = self.film(temb)[:, :, None, None].chunk(2, dim=1)
        h = h * (1 + gamma) + beta
        return x + self.conv2(h)
