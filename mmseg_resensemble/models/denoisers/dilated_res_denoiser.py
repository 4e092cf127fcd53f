# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""εθ(x̄t, I0, t) of ResEnsemble-DDPM: dilated residual blocks."""
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule, build_activation_layer
from mmengine.model import BaseModule, normal_init
from mmseg.models.utils import resize
from mmseg.registry import MODELS
from mmseg.utils import ConfigType, OptMultiConfig
from torch import Tensor

from ..utils import timestep_embedding
from .separable_timestep_block import SeparableTimestepBlock
from .timestep_res_block import TimestepResBlock

#: the residual blocks ``block_type`` chooses from
BLOCK_TYPES = dict(dense=TimestepResBlock, separable=SeparableTimestepBlock)


@MODELS.register_module()
class DilatedResDenoiser(BaseModule):
    """The denoising network εθ(x̄t, I0, t) (Eq. 19): a light stack of
    dilated residual blocks at the head's working resolution.

    A denoiser is what a diffusion head builds from ``denoiser=dict(type=
    ...)``; any registered module with this interface can replace it:

    - ``encode_condition(feats)``: the image condition, computed once per
      image, from the selected E2E feature levels, a list of
      ``(N, Ci, hi, wi)`` whose first is the finest (the channels sum to
      ``in_channels``);
    - ``forward(cond, x_hat, x_t, t)``: the output ``(N, num_classes, h,
      w)`` (of the head's ``prediction_type``).

    The head fills in ``in_channels``, ``channels``, ``num_classes``,
    ``condition_on_e2e``, ``norm_cfg`` and ``act_cfg`` from its own
    arguments unless the denoiser config sets them.

    Here the condition is a 1x1 projection of the levels resized to the
    first one and concatenated, computed without building that
    concatenation (see :meth:`encode_condition`); x̄t (and x̂0) enter
    through a 3x3 conv added to it, the step through FiLM in every block.

    Args:
        in_channels (int): Channels of the condition features.
        channels (int): Width C of the blocks.
        num_classes (int): K, the channels of x̄t, x̂0 and the output.
        condition_on_e2e (bool): Feed x̂0 to the network. Defaults to True.
        num_blocks (int): Number of residual blocks. Defaults to 4.
        dilations (Sequence[int]): Dilation of each block's first conv;
            length ``num_blocks``. Defaults to (1, 2, 4, 1).
        block_type (str): A key of :data:`BLOCK_TYPES`: 'dense' (two
            dense 3x3 convs, :class:`TimestepResBlock`, the first head's)
            or 'separable' (a depthwise 3x3 conv and a 1x1 MLP,
            :class:`SeparableTimestepBlock`, about a quarter of the
            multiply-adds). Defaults to 'dense', so that configs written
            before the choice build what they trained.
        expand_ratio (int): The MLP width of 'separable' blocks in units of
            ``channels``. Defaults to 2.
        time_embed_dims (int, optional): Size of the step embedding.
            Defaults to ``2 * channels``.
        norm_cfg (dict): Norm layers. Defaults to GroupNorm with 8 groups
            (:class:`~mmseg_resensemble.models.utils.ParallelGroupNorm`).
        act_cfg (dict): Activations. Defaults to SiLU.
        align_corners (bool): Of the bilinear resizing of the condition
            levels. Defaults to False.
        init_cfg (dict, optional): Initialisation config.
    """

    def __init__(self,
                 in_channels: int,
                 channels: int,
                 num_classes: int,
                 condition_on_e2e: bool = True,
                 num_blocks: int = 4,
                 dilations: Sequence[int] = (1, 2, 4, 1),
                 block_type: str = 'dense',
                 expand_ratio: int = 2,
                 time_embed_dims: Optional[int] = None,
                 norm_cfg: ConfigType = dict(type='ParallelGN', num_groups=8),
                 act_cfg: ConfigType = dict(type='SiLU'),
                 align_corners: bool = False,
                 init_cfg: OptMultiConfig = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if len(dilations) != num_blocks:
            raise ValueError(f'dilations={tuple(dilations)} must have '
                             f'num_blocks={num_blocks} entries')
        if block_type not in BLOCK_TYPES:
            raise ValueError(f'block_type={block_type!r} is not one of '
                             f'{sorted(BLOCK_TYPES)}')
        self.num_classes = num_classes
        self.align_corners = align_corners
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
        extra = dict(expand_ratio=expand_ratio) if (
            block_type == 'separable') else dict()
        self.blocks = nn.ModuleList([
            BLOCK_TYPES[block_type](channels, self.time_embed_dims, d,
                                    norm_cfg, act_cfg, **extra)
            for d in dilations
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

    def encode_condition(self, feats: Sequence[Tensor]) -> Tensor:
        """The image condition (N, C, h, w) of the selected levels.

        ``cond_proj`` (1x1 conv, norm, activation) of the levels resized to
        the first one's (h, w) and concatenated, as MMSeg's
        ``resize_concat``, but computed level by level: each level is
        projected at its own resolution by its slice of the 1x1 weight,
        then resized and summed (as SegFormer's head). Bilinear resizing
        and a 1x1 conv commute, so the result is the same while the
        concatenation at (h, w), ``sum(Ci)`` channels, is never built and
        a coarse level costs its own pixels, not the finest level's.

        Args:
            feats (Sequence[Tensor]): Levels (N, Ci, hi, wi), the first
                one the finest; their channels sum to ``in_channels``.

        Returns:
            Tensor: (N, C, h, w).
        """
        conv = self.cond_proj.conv
        widths = [f.shape[1] for f in feats]
        if sum(widths) != conv.in_channels:
            raise ValueError(
                f'the condition levels have {widths} channels, '
                f'{sum(widths)} in all; the denoiser was built for '
                f'in_channels={conv.in_channels}')
        size = feats[0].shape[-2:]
        cond = None
        for feat, weight in zip(feats, conv.weight.split(widths, dim=1)):
            level = F.conv2d(feat, weight)
            if level.shape[-2:] != size:
                level = resize(
                    level,
                    size=size,
                    mode='bilinear',
                    align_corners=self.align_corners)
            cond = level if cond is None else cond + level
        if conv.bias is not None:
            cond = cond + conv.bias[:, None, None]
        if self.cond_proj.with_norm:
            cond = self.cond_proj.norm(cond)
        if self.cond_proj.with_activation:
            cond = self.cond_proj.activate(cond)
        return cond

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
