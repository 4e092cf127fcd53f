# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""εθ(x̄t, I0, t) of ResEnsemble-DDPM: dilated residual blocks."""
from typing import Optional, Sequence

import torch
import torch.nn as nn
from mmcv.cnn import ConvModule, build_activation_layer
from mmengine.model import BaseModule, normal_init
from mmseg.registry import MODELS
from mmseg.utils import ConfigType, OptMultiConfig
from torch import Tensor

from ..utils import timestep_embedding
from .timestep_res_block import TimestepResBlock


@MODELS.register_module()
class DilatedResDenoiser(BaseModule):
    """The denoising network εθ(x̄t, I0, t) (Eq. 19): a light stack of
    dilated residual blocks at the head's working resolution.

    A denoiser is what a diffusion head builds from ``denoiser=dict(type=
    ...)``; any registered module with this interface can replace it:

    - ``encode_condition(feats)``: the image condition, computed once per
      image, from the E2E features ``(N, in_channels, h, w)``;
    - ``forward(cond, x_hat, x_t, t)``: the output ``(N, num_classes, h,
      w)`` (of the head's ``prediction_type``).

    The head fills in ``in_channels``, ``channels``, ``num_classes``,
    ``condition_on_e2e``, ``norm_cfg`` and ``act_cfg`` from its own
    arguments unless the denoiser config sets them.

    Here the condition is a 1x1 projection of the features; x̄t (and x̂0)
    enter through a 3x3 conv added to it, the step through FiLM in every
    block.

    Args:
        in_channels (int): Channels of the condition features.
        channels (int): Width C of the blocks.
        num_classes (int): K, the channels of x̄t, x̂0 and the output.
        condition_on_e2e (bool): Feed x̂0 to the network. Defaults to True.
        num_blocks (int): Number of residual blocks. Defaults to 4.
        dilations (Sequence[int]): Dilation of each block's first conv;
            length ``num_blocks``. Defaults to (1, 2, 4, 1).
        time_embed_dims (int, optional): Size of the step embedding.
            Defaults to ``2 * channels``.
        norm_cfg (dict): Norm layers. Defaults to GN with 8 groups.
        act_cfg (dict): Activations. Defaults to SiLU.
        init_cfg (dict, optional): Initialisation config.
    """

    def __init__(self,
                 in_channels: int,
                 channels: int,
                 num_classes: int,
                 condition_on_e2e: bool = True,
                 num_blocks: int = 4,
                 dilations: Sequence[int] = (1, 2, 4, 1),
                 time_embed_dims: Optional[int] = None,
                 norm_cfg: ConfigType = dict(type='GN', num_groups=8),
                 act_cfg: ConfigType = dict(type='SiLU'),
                 init_cfg: OptMultiConfig = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if len(dilations) != num_blocks:
            raise ValueError(f'dilations={tuple(dilations)} must have '
                             f'num_blocks={num_blocks} entries')
        self.num_classes = num_classes
        self.condition_on_e2e = condition_on_e2e
        self.time_embed_dims = time_embed_dims or 2 * channels
        self.cond_proj = ConvModule(
            in_channels, channels, 1, norm_cfg=norm_cfg, act_cfg=act_cfg)
        mask_channels = num_classes * (2 if condition_on_e2e else 1)
        self.mask_in = nn.Conv2d(mask_channels, channels, 3, padding=1)
        self.time_mlp = nn.Sequential(
            nn.Linear(self.time_embed_dims, self.time_embed_dims),
            build_activation_layer(act_cfg),
            nn.Linear(self.time_embed_dims, self.time_embed_dims))
        self.blocks = nn.ModuleList([
            TimestepResBlock(channels, self.time_embed_dims, d, norm_cfg,
                             act_cfg) for d in dilations
        ])
        self.out_norm_act = ConvModule(
            channels,
            channels,
            1,
            norm_cfg=norm_cfg,
            act_cfg=act_cfg,
            order=('norm', 'act', 'conv'))
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def init_weights(self) -> None:
        """MMSeg's classifier init (normal, std 0.01) for the output conv;
        the blocks start as the identity."""
        super().init_weights()
        normal_init(self.conv_seg, mean=0, std=0.01)
        for block in self.blocks:
            block.zero_init()

    def encode_condition(self, feats: Tensor) -> Tensor:
        """The image condition (N, C, h, w) of features (N, Cin, h, w)."""
        return self.cond_proj(feats)

    def forward(self, cond: Tensor, x_hat: Tensor, x_t: Tensor,
                t: Tensor) -> Tensor:
        """εθ(x̄t, I0, t).

        Args:
            cond (Tensor): Image condition from :meth:`encode_condition`,
                (N, C, h, w).
            x_hat (Tensor): Encoded E2E output x̂0, (N, K, h, w); ignored
                when ``condition_on_e2e`` is False.
            x_t (Tensor): Noisy sample x̄t, (N, K, h, w).
            t (Tensor): 0-based steps, (N,).

        Returns:
            Tensor: The output of shape (N, K, h, w).
        """
        assert x_t.shape[0] == cond.shape[0] == t.shape[0]
        assert x_t.shape[-2:] == cond.shape[-2:], (x_t.shape, cond.shape)
        masks = torch.cat([x_t, x_hat], 1) if self.condition_on_e2e else x_t
        h = cond + self.mask_in(masks.to(cond.dtype))
        temb = self.time_mlp(
            timestep_embedding(t, self.time_embed_dims).to(cond.dtype))
        for block in self.blocks:
            h = block(h, temb)
        return self.conv_seg(self.out_norm_act(h))
