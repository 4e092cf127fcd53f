# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""The diffusion learner of ResEnsemble-DDPM: εθ(x̄t, I0, t)."""
import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmcv.cnn import ConvModule, build_activation_layer
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.utils import resize
from mmseg.registry import MODELS
from mmseg.utils import ConfigType, SampleList
from torch import Tensor

from mmseg_resensemble.diffusion import (GaussianDiffusion,
                                         check_prediction_type)
from ..utils import (analog_to_probs, labels_to_onehot, probs_to_analog,
                     timestep_embedding)


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
        nn.init.zeros_(self.film[-1].weight)
        nn.init.zeros_(self.film[-1].bias)
        nn.init.zeros_(self.conv2.conv.weight)
        if self.conv2.conv.bias is not None:
            nn.init.zeros_(self.conv2.conv.bias)

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        """x: (N, C, h, w); temb: (N, E)."""
        h = self.conv1(x)
        gamma, beta = self.film(temb)[:, :, None, None].chunk(2, dim=1)
        h = h * (1 + gamma) + beta
        return x + self.conv2(h)


@MODELS.register_module()
class ResidualDiffusionHead(BaseDecodeHead):
    """Noise predictor of ResEnsemble-DDPM (Shi, Dong et al. 2023).

    The head owns the method's maths: it encodes masks (x0: one-hot ground
    truth, x̂0: the frozen E2E learner's probabilities, both mapped to
    [-s, s]), builds the residual target x̄0 = x0 − R = 2·x0 − x̂0, trains
    εθ with the ε-prediction loss (Algorithm 1) and samples x̄0 with the
    reverse process (Algorithm 2), returning the ensemble ½(x̄0 + x̂0)
    (Eq. 15).

    εθ(x̄t, I0, t) (Eq. 19) is a light stack of dilated residual blocks at
    the working resolution. The condition on I0 is the frozen E2E
    backbone's features (selected by ``in_index``/``input_transform``),
    projected once per image by :meth:`encode_condition`, and x̂0 itself;
    the step t enters every block through FiLM. Only the blocks run at each
    sampling step.

    Args:
        num_blocks (int): Number of residual blocks. Defaults to 4.
        dilations (Sequence[int]): Dilation of each block's first conv;
            length ``num_blocks``. Defaults to (1, 2, 4, 1).
        time_embed_dims (int, optional): Size of the step embedding.
            Defaults to ``2 * channels``.
        scale (float): s, the mask encoding range [-s, s]. Defaults to 1.0.
        working_stride (int, optional): The head works at
            ceil(H / stride) x ceil(W / stride) of the network input
            (e.g. 4 for DeepLabV3+'s decoder output). Defaults to None:
            the resolution of the selected condition features.
        condition_on_e2e (bool): Feed x̂0 to εθ. Defaults to True.
        residual_target (bool): True generates the residual target
            x̄0 = 2·x0 − x̂0 and returns the ensemble ½(x̄0 + x̂0), as the
            paper. False generates x0 itself and returns it (a plain
            conditional DDPM, for ablations). Defaults to True.
        prediction_type (str): What εθ outputs: 'epsilon', the noise, with
            the loss ‖ε − εθ‖² of Algorithm 1 (the paper); 'sample', x̄0
            itself (loss ‖x̄0 − x̂θ‖²); or 'v' (Salimans & Ho 2022). Sampling
            converts any of them to the noise, so the samplers are the same.
            Defaults to 'epsilon'.
        diffusion (dict): Keyword arguments of
            :class:`~mmseg_resensemble.diffusion.GaussianDiffusion`.
            Defaults to the paper's: 1000 steps, linear βt from 1e-4 to
            2e-2 (Eq. 24).
        **kwargs: :class:`BaseDecodeHead` arguments (``in_channels``,
            ``channels``, ``num_classes``, ``in_index``, ...).
    """

    def __init__(self,
                 num_blocks: int = 4,
                 dilations: Sequence[int] = (1, 2, 4, 1),
                 time_embed_dims: Optional[int] = None,
                 scale: float = 1.0,
                 working_stride: Optional[int] = None,
                 condition_on_e2e: bool = True,
                 residual_target: bool = True,
                 prediction_type: str = 'epsilon',
                 diffusion: dict = dict(
                     num_timesteps=1000,
                     beta_schedule='linear',
                     beta_start=1e-4,
                     beta_end=2e-2),
                 norm_cfg: ConfigType = dict(type='GN', num_groups=8),
                 act_cfg: ConfigType = dict(type='SiLU'),
                 dropout_ratio: float = 0.,
                 loss_decode: ConfigType = dict(type='NoisePredictionLoss'),
                 **kwargs) -> None:
        super().__init__(
            norm_cfg=norm_cfg,
            act_cfg=act_cfg,
            dropout_ratio=dropout_ratio,
            loss_decode=loss_decode,
            **kwargs)
        if len(dilations) != num_blocks:
            raise ValueError(f'dilations={tuple(dilations)} must have '
                             f'num_blocks={num_blocks} entries')
        if scale <= 0:
            raise ValueError(f'scale must be > 0, got {scale}')
        if working_stride is not None and working_stride < 1:
            raise ValueError(
                f'working_stride must be >= 1, got {working_stride}')
        if self.out_channels != self.num_classes:
            raise ValueError(
                'ResidualDiffusionHead diffuses one channel per class: '
                f'out_channels={self.out_channels} must equal '
                f'num_classes={self.num_classes}')
        self.scale = float(scale)
        self.working_stride = working_stride
        self.condition_on_e2e = condition_on_e2e
        self.residual_target = residual_target
        check_prediction_type(prediction_type)
        self.prediction_type = prediction_type
        self.diffusion = GaussianDiffusion(**diffusion)
        self.time_embed_dims = time_embed_dims or 2 * self.channels

        # BaseDecodeHead sums in_channels for input_transform='resize_concat'
        self.cond_proj = ConvModule(
            self.in_channels,
            self.channels,
            1,
            norm_cfg=self.norm_cfg,
            act_cfg=self.act_cfg)
        mask_channels = self.num_classes * (2 if condition_on_e2e else 1)
        self.mask_in = nn.Conv2d(mask_channels, self.channels, 3, padding=1)
        self.time_mlp = nn.Sequential(
            nn.Linear(self.time_embed_dims, self.time_embed_dims),
            build_activation_layer(self.act_cfg),
            nn.Linear(self.time_embed_dims, self.time_embed_dims))
        self.blocks = nn.ModuleList([
            TimestepResBlock(self.channels, self.time_embed_dims, d,
                             self.norm_cfg, self.act_cfg) for d in dilations
        ])
        self.out_norm_act = ConvModule(
            self.channels,
            self.channels,
            1,
            norm_cfg=self.norm_cfg,
            act_cfg=self.act_cfg,
            order=('norm', 'act', 'conv'))

    def init_weights(self) -> None:
        super().init_weights()
        for block in self.blocks:
            block.zero_init()

    # ------------------------------------------------------------------
    # the network
    # ------------------------------------------------------------------
    def encode_condition(self, inputs: List[Tensor],
                         input_size: Sequence[int]) -> Tensor:
        """Project the E2E backbone's features once per image (Eq. 19).

        The projection is resized to the working resolution: ceil(H / s) x
        ceil(W / s) for ``working_stride`` s, else the features' own.

        Args:
            inputs (list[Tensor]): Multi-level features, each (N, Ci, hi,
                wi).
            input_size (Sequence[int]): Network input size (H, W).

        Returns:
            Tensor: Condition of shape (N, C, h, w).
        """
        cond = self.cond_proj(self._transform_inputs(inputs))
        if self.working_stride is not None:
            size = tuple(
                math.ceil(s / self.working_stride) for s in input_size)
            if tuple(cond.shape[-2:]) != size:
                cond = resize(
                    cond,
                    size=size,
                    mode='bilinear',
                    align_corners=self.align_corners)
        return cond

    def forward(self, cond: Tensor, x_hat: Tensor, x_t: Tensor,
                t: Tensor) -> Tensor:
        """Predict the noise εθ(x̄t, I0, t).

        Args:
            cond (Tensor): Image condition from :meth:`encode_condition`,
                (N, C, h, w).
            x_hat (Tensor): Encoded E2E output x̂0, (N, K, h, w); ignored
                when ``condition_on_e2e`` is False.
            x_t (Tensor): Noisy sample x̄t, (N, K, h, w).
            t (Tensor): 0-based steps, (N,).

        Returns:
            Tensor: Predicted noise of shape (N, K, h, w).
        """
        assert x_t.shape[0] == cond.shape[0] == t.shape[0]
        assert x_t.shape[-2:] == cond.shape[-2:], (x_t.shape, cond.shape)
        masks = torch.cat([x_t, x_hat], 1) if self.condition_on_e2e else x_t
        h = cond + self.mask_in(masks.to(cond.dtype))
        temb = self.time_mlp(
            timestep_embedding(t, self.time_embed_dims).to(cond.dtype))
        for block in self.blocks:
            h = block(h, temb)
        return self.cls_seg(self.out_norm_act(h))

    # ------------------------------------------------------------------
    # the method
    # ------------------------------------------------------------------
    @property
    def target_bound(self) -> float:
        """Bound of the generated target: x̄0 = 2·x0 − x̂0 lies in [-3s, 3s]
        (x0 in {-s, s}, x̂0 in [-s, s]); x0 itself in [-s, s]."""
        return (3. if self.residual_target else 1.) * self.scale

    def encode_e2e(self, e2e_probs: Tensor, size: Sequence[int]) -> Tensor:
        """x̂0: E2E probabilities (N, K, H', W') -> (N, K, h, w) in [-s, s].
        """
        if e2e_probs.shape[1] != self.num_classes:
            raise ValueError(
                f'the E2E learner gives {e2e_probs.shape[1]} classes, '
                f'the head has num_classes={self.num_classes}')
        if tuple(e2e_probs.shape[-2:]) != tuple(size):
            e2e_probs = resize(
                e2e_probs,
                size=tuple(size),
                mode='bilinear',
                align_corners=self.align_corners)
        return probs_to_analog(e2e_probs.float(), self.scale)

    def training_maps(self, inputs: List[Tensor], e2e_probs: Tensor,
                      batch_data_samples: SampleList) -> Tuple[Tensor, ...]:
        """Condition, x̂0 and ground truth at the working resolution.

        Returns:
            tuple[Tensor]: ``cond`` (N, C, h, w), ``x_hat`` (N, K, h, w) in
            [-s, s], the one-hot ground truth ``onehot`` (N, K, h, w) in
            [0, 1] and the labelled-pixel mask ``valid`` (N, 1, h, w).
        """
        seg_label = self._stack_batch_gt(batch_data_samples)
        cond = self.encode_condition(inputs, seg_label.shape[-2:])
        size = cond.shape[-2:]
        x_hat = self.encode_e2e(e2e_probs, size)
        try:
            onehot, valid = labels_to_onehot(seg_label, self.num_classes,
                                             self.ignore_index, size)
        except ValueError as e:  # name the label files
            files = [
                sample.metainfo.get('seg_map_path', f'sample {i}')
                for i, (
                    sample,
                    label) in enumerate(zip(batch_data_samples, seg_label))
                if ((label != self.ignore_index)
                    & ((label < 0) | (label >= self.num_classes))).any()
            ]
            raise ValueError(
                f'{e}. Label maps with such values: {files}') from e
        return cond, x_hat, onehot, valid

    def loss(self, inputs: List[Tensor], e2e_probs: Tensor,
             batch_data_samples: SampleList,
             train_cfg: ConfigType) -> Dict[str, Tensor]:
        """The training step of Algorithm 1.

        x0 is the one-hot ground truth, x̂0 the E2E output, R = x̂0 − x0,
        x̄0 = x0 − R; t ~ U{1..T}, ε ~ N(0, I),
        x̄t = √ᾱt·x̄0 + √(1−ᾱt)·ε (Eq. 17 with ᾱt, see
        :meth:`GaussianDiffusion.q_sample`), loss ‖ε − εθ(x̄t, I0, t)‖².
        Ignored pixels have R = 0 and no weight in the loss.

        Args:
            inputs (list[Tensor]): Frozen E2E backbone features.
            e2e_probs (Tensor): E2E probabilities (N, K, H', W'), any
                resolution.
            batch_data_samples (list[SegDataSample]): With ``gt_sem_seg``.
            train_cfg (dict): Unused; kept for the MMSeg interface.

        Returns:
            dict[str, Tensor]: The loss.
        """
        cond, x_hat, onehot, valid = self.training_maps(
            inputs, e2e_probs, batch_data_samples)
        x0 = torch.where(valid, probs_to_analog(onehot, self.scale), x_hat)
        # x̄0 = x0 − R = 2·x0 − x̂0 (R = 0 where ignored, as x0 = x̂0 there)
        x_start = 2 * x0 - x_hat if self.residual_target else x0
        t = torch.randint(
            0, self.diffusion.num_timesteps, (x0.shape[0], ), device=x0.device)
        noise = torch.randn_like(x_start)
        x_t = self.diffusion.q_sample(x_start, t, noise)
        output = self.forward(cond, x_hat, x_t, t)
        target = self.diffusion.training_target(self.prediction_type, x_start,
                                                t, noise)
        loss_decodes = (
            self.loss_decode if isinstance(self.loss_decode, nn.ModuleList)
            else [self.loss_decode])
        losses = dict()
        for loss_decode in loss_decodes:
            loss = loss_decode(output, target, weight=valid)
            name = loss_decode.loss_name
            losses[name] = losses[name] + loss if name in losses else loss
        return losses

    def check_test_cfg(self, test_cfg: ConfigType) -> None:
        """Raise ``ValueError`` naming a bad sampling setting of
        ``test_cfg`` (sampler, num_steps, num_samples, eta, seed,
        clip_denoised, start_step, ensemble_weight), before any work."""
        self.diffusion.check_sampler(
            test_cfg.get('sampler', 'ddim'),
            test_cfg.get('num_steps', None),
            start_step=test_cfg.get('start_step', None),
            prefix='test_cfg.')
        weight = test_cfg.get('ensemble_weight', 0.5)
        if (isinstance(weight, bool) or not isinstance(weight, (int, float))
                or not 0 <= weight <= 1):
            raise ValueError('test_cfg.ensemble_weight must be a number in '
                             f'[0, 1], got {weight!r}')
        num_samples = test_cfg.get('num_samples', 1)
        if (isinstance(num_samples, bool) or not isinstance(num_samples, int)
                or num_samples < 1):
            raise ValueError('test_cfg.num_samples must be an int >= 1, got '
                             f'{num_samples!r}')
        eta = test_cfg.get('eta', 0.)
        if (isinstance(eta, bool) or not isinstance(eta, (int, float))
                or not 0 <= eta <= 1):
            raise ValueError(
                f'test_cfg.eta must be a number in [0, 1], got {eta!r}')
        seed = test_cfg.get('seed', 0)
        if seed is not None and (isinstance(seed, bool)
                                 or not isinstance(seed, int)):
            raise ValueError(
                f'test_cfg.seed must be an int or None, got {seed!r}')
        clip = test_cfg.get('clip_denoised', None)
        if clip is not None and not isinstance(clip, bool):
            raise ValueError('test_cfg.clip_denoised must be a bool or None, '
                             f'got {clip!r}')

    def predict(self, inputs: List[Tensor], e2e_probs: Tensor,
                input_size: Sequence[int],
                test_cfg: ConfigType) -> Dict[str, Tensor]:
        """Sample x̄0 (Algorithm 2) and return the ensemble (Eq. 15).

        Args:
            inputs (list[Tensor]): Frozen E2E backbone features.
            e2e_probs (Tensor): E2E probabilities (N, K, H', W').
            input_size (Sequence[int]): Network input size (H, W).
            test_cfg (dict): ``sampler`` ('ddpm' | 'ddim'), ``num_steps``
                (None: all T), ``eta``, ``num_samples``, ``seed`` and
                ``clip_denoised`` (clip the x0 predicted at each step to the
                target's range, [-3s, 3s] for x̄0; default: True for 'ddim',
                False for 'ddpm', which is then Algorithm 2 exactly),
                ``start_step`` (T': start the reverse process at step T'
                from x̂0 noised to that step, truncated diffusion as in
                DDPS and Resfusion; None: from pure noise at T, the paper)
                and ``ensemble_weight`` (w: the answer is
                w·x̄0 + (1 − w)·x̂0; 0.5 is Eq. 15).

        Returns:
            dict[str, Tensor]: ``probs``, the ensemble probabilities
            (N, K, h, w) normalised over classes (the mean over samples),
            and ``uncertainty`` (N, 1, h, w): the class-averaged standard
            deviation of the probabilities across samples (0 for one
            sample).
        """
        sampler = test_cfg.get('sampler', 'ddim')
        num_steps = test_cfg.get('num_steps', None)
        eta = test_cfg.get('eta', 0.)
        num_samples = test_cfg.get('num_samples', 1)
        seed = test_cfg.get('seed', 0)
        clip = test_cfg.get('clip_denoised', None)
        if clip is None:
            clip = sampler == 'ddim'
        start_step = test_cfg.get('start_step', None)
        weight = test_cfg.get('ensemble_weight', 0.5)
        self.check_test_cfg(test_cfg)

        cond = self.encode_condition(inputs, input_size)
        x_hat = self.encode_e2e(e2e_probs, cond.shape[-2:]).to(cond.dtype)
        # num_samples copies in one batch; the condition is computed once
        cond = cond.repeat_interleave(num_samples, dim=0)
        x_hat = x_hat.repeat_interleave(num_samples, dim=0)
        generator = None
        if seed is not None:
            generator = torch.Generator().manual_seed(int(seed))

        def eps_fn(x_t: Tensor, t: Tensor) -> Tensor:
            return self.diffusion.eps_from_model_output(
                self.prediction_type, self.forward(cond, x_hat, x_t, t), x_t,
                t)

        x_init = None
        if start_step is not None:
            # truncated diffusion: x̄_T' = √ᾱ_T'·x̂0 + √(1−ᾱ_T')·ε
            noise = torch.randn(
                x_hat.shape, generator=generator, dtype=torch.float32)
            t_init = torch.full((x_hat.shape[0], ),
                                start_step - 1,
                                dtype=torch.long,
                                device=x_hat.device)
            x_init = self.diffusion.q_sample(
                x_hat, t_init, noise.to(x_hat.device, x_hat.dtype))
        x_start = self.diffusion.sample(
            eps_fn,
            tuple(x_hat.shape),
            noise=x_init,
            start_step=start_step,
            sampler=sampler,
            num_steps=num_steps,
            eta=eta,
            generator=generator,
            device=x_hat.device,
            dtype=x_hat.dtype,
            clip_denoised=self.target_bound if clip else None)
        # Eq. 15 (w = ½): the two learners err in opposite directions
        out = (
            weight * x_start +
            (1 - weight) * x_hat if self.residual_target else x_start)
        probs = analog_to_probs(out, self.scale).clamp(min=0)
        probs = probs / probs.sum(1, keepdim=True).clamp(min=1e-6)
        probs = probs.unflatten(0, (-1, num_samples))
        uncertainty = probs.std(1, unbiased=False).mean(1, keepdim=True)
        return dict(probs=probs.mean(1), uncertainty=uncertainty)
