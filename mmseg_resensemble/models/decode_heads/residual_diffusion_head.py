# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""The diffusion learner of ResEnsemble-DDPM: the method around εθ."""
import contextlib
import logging
from typing import Dict, List, NamedTuple, Optional, Sequence, Union

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmseg.registry import MODELS
from mmseg.utils import ConfigType, SampleList
from torch import Tensor

from mmseg_resensemble.diffusion import (SAMPLING, TRAINING, GaussianDiffusion,
                                         TrainingTimesteps, draw_noise)
from ..utils import analog_to_probs, probs_to_analog
from .e2e_conditioned_head import (E2EConditionedHead, add_loss, as_loss_list,
                                   build_losses)

#: every key of ``test_cfg`` the head reads and its default: the sampling
#: keys of the paper's Algorithm 2 (:data:`~mmseg_resensemble.diffusion.
#: SAMPLING`, checked by the diffusion core) and Eq. 15 (``ensemble_weight``
#: ½; 'auto': the weight :class:`~mmseg_resensemble.engine.
#: EnsembleWeightHook` chose on held-out images and stored with the
#: checkpoint); ``autocast`` is the precision of the head's network (see
#: :func:`autocast_dtype`); ``ensemble_parts`` adds the two parts of the
#: ensemble to the output (for choosing the weight)
TEST_CFG_DEFAULTS = dict(
    SAMPLING, ensemble_weight=0.5, autocast='fp32', ensemble_parts=False)
#: every key of the segmentor's ``train_cfg`` the head reads, and its
#: default (:data:`~mmseg_resensemble.diffusion.TRAINING`, Algorithm 1)
TRAIN_CFG_DEFAULTS = dict(TRAINING)
#: the ensemble weight before one is chosen (Eq. 15)
EQ15_WEIGHT = 0.5
#: ``chosen_ensemble_weight`` before a weight is chosen (weights lie in
#: [0, 1])
NONE_CHOSEN = -1.0
#: the smallest probability the task loss sees (log 1e-4 = -9.2)
MIN_PROB = 1e-4


def none_chosen_if_missing(module: nn.Module, state_dict: dict, prefix: str,
                           *args) -> None:
    """A load-state-dict pre-hook: checkpoints from before the weight was
    chosen load as 'none chosen'."""
    state_dict.setdefault(f'{prefix}chosen_ensemble_weight',
                          torch.tensor(NONE_CHOSEN))


class TrainingSettings(NamedTuple):
    """``train_cfg`` read and checked once (see
    :meth:`ResidualDiffusionHead.training_settings`).

    Attributes:
        timesteps (TrainingTimesteps): Where t is drawn.
        self_aligned (float): The probability that a batch's x̄t is built
            from the network's own detached estimate of x̄0.
        first_step (int): The 0-based step of that first estimate: the
            sampler's first step.
        ensemble_weight (float): w of the ensemble the task loss scores.
    """
    timesteps: TrainingTimesteps
    self_aligned: float
    first_step: int
    ensemble_weight: float


#: the values of ``test_cfg.autocast``
AUTOCAST_DTYPES = dict(
    fp32=None, bf16=torch.bfloat16, fp16=torch.float16, auto=None)


def autocast_dtype(autocast: str,
                   device: torch.device) -> Optional[torch.dtype]:
    """The dtype the head's network runs in under ``torch.autocast``.

    Args:
        autocast (str): 'fp32' (no autocast, the default: on an H200
            bf16 saved 1-3 % of the time, docs/benchmarks.md section 8),
            'bf16', 'fp16', or 'auto': bf16 on CUDA devices that support
            it, fp32 elsewhere (CPUs without native bf16 run it many
            times slower than fp32).
        device (torch.device): Where the head runs.

    Returns:
        torch.dtype | None: None for fp32.
    """
    if autocast == 'auto':
        if device.type == 'cuda' and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    return AUTOCAST_DTYPES[autocast]


@MODELS.register_module()
class ResidualDiffusionHead(E2EConditionedHead):
    """The diffusion learner of ResEnsemble-DDPM (Shi, Dong et al. 2023).

    The head is the method: it encodes masks (x0: one-hot ground truth,
    x̂0: the frozen E2E learner's probabilities, both mapped to [-s, s]),
    builds the residual target x̄0 = x0 − R = 2·x0 − x̂0, trains εθ with the
    ε-prediction loss (Algorithm 1) and samples x̄0 with the reverse process
    (Algorithm 2), returning the ensemble ½(x̄0 + x̂0) (Eq. 15). The network
    εθ(x̄t, I0, t) is the ``denoiser`` (see :class:`E2EConditionedHead`),
    the schedule and the samplers are
    :class:`~mmseg_resensemble.diffusion.GaussianDiffusion`'s, the loss is
    ``loss_decode``.

    Args:
        residual_target (bool): True generates the residual target
            x̄0 = 2·x0 − x̂0 and returns the ensemble ½(x̄0 + x̂0), as the
            paper. False generates x0 itself and returns it (a plain
            conditional DDPM, for ablations). Defaults to True.
        diffusion (dict): Keyword arguments of
            :class:`~mmseg_resensemble.diffusion.GaussianDiffusion`,
            ``prediction_type`` included (what εθ outputs: 'epsilon', the
            noise, with the loss ‖ε − εθ‖² of Algorithm 1; 'sample', x̄0
            itself; or 'v'). Missing keys take the paper's values
            (:data:`~mmseg_resensemble.diffusion.DIFFUSION`).
        loss_decode (dict): The loss of the network's output and its
            target. Defaults to ``DiffusionTargetLoss``.
        loss_ensemble (dict | list[dict], optional): MMSeg losses (for
            instance ``CrossEntropyLoss``, ``LovaszLoss``, ``DiceLoss``) of
            the ensemble w·x̄0 + (1 − w)·x̂0 the sampler would return at the
            training step (x̄0 read from the output by the diffusion's
            ``predict_start_and_eps``, clipped to the target's range), as
            class scores log p against the label maps; added to
            ``loss_decode``'s, each logged by its ``loss_name``. None (the
            paper): no such loss.
        **kwargs: :class:`E2EConditionedHead` arguments (``denoiser``,
            ``scale``, ``working_stride``, ``condition_on_e2e``, ``debug``)
            and the decode-head arguments (``in_channels``, ``channels``,
            ``num_classes``, ``in_index``, ...).
    """

    #: state-dict keys older checkpoints lack (the head fills them)
    optional_state_keys = ('chosen_ensemble_weight', )

    def __init__(self,
                 residual_target: bool = True,
                 diffusion: ConfigType = dict(),
                 loss_decode: ConfigType = dict(type='DiffusionTargetLoss'),
                 loss_ensemble: Optional[ConfigType] = None,
                 **kwargs) -> None:
        diffusion = dict(diffusion)
        if 'prediction_type' in kwargs:  # older configs
            print_log(
                'ResidualDiffusionHead: prediction_type is an argument of '
                'the diffusion now; put it in decode_head.diffusion',
                logger='current',
                level=logging.WARNING)
            diffusion['prediction_type'] = kwargs.pop('prediction_type')
        super().__init__(loss_decode=loss_decode, **kwargs)
        self.residual_target = residual_target
        diffusion.setdefault('check_args', bool(self.debug))
        self.diffusion = GaussianDiffusion(**diffusion)
        self.loss_ensemble = build_losses(loss_ensemble)
        # the weight EnsembleWeightHook chose (NONE_CHOSEN: none yet),
        # saved with the checkpoint; test_cfg.ensemble_weight='auto' reads it
        self.register_buffer('chosen_ensemble_weight',
                             torch.tensor(NONE_CHOSEN))
        self.register_load_state_dict_pre_hook(none_chosen_if_missing)

    @property
    def prediction_type(self) -> str:
        """What εθ outputs (the diffusion's ``prediction_type``)."""
        return self.diffusion.prediction_type

    @property
    def target_bound(self) -> float:
        """Bound of the generated target: x̄0 = 2·x0 − x̂0 lies in [-3s, 3s]
        (x0 in {-s, s}, x̂0 in [-s, s]); x0 itself in [-s, s]."""
        return (3. if self.residual_target else 1.) * self.scale

    def training_settings(
            self,
            train_cfg: Optional[ConfigType],
            test_cfg: Optional[ConfigType] = None) -> TrainingSettings:
        """Read and check the training keys of ``train_cfg`` (missing ones
        from :data:`TRAIN_CFG_DEFAULTS`): the one place that reads them.

        ``timesteps`` is 'uniform' (Algorithm 1), 'sampler' (the steps the
        sampler of ``test_cfg`` visits) or a pair (lo, hi) of 1-based steps
        (see :class:`~mmseg_resensemble.diffusion.TrainingTimesteps`);
        ``self_aligned`` is the probability p in [0, 1] of a self-aligned
        batch (see :meth:`loss`). The task loss scores the ensemble with
        ``test_cfg``'s ``ensemble_weight`` (½ when it is 'auto').

        Raises:
            ValueError: Naming an unknown key or a bad value.
        """
        train_cfg = dict(train_cfg or {})
        unknown = sorted(set(train_cfg) - set(TRAIN_CFG_DEFAULTS))
        if unknown:
            raise ValueError(f'unknown train_cfg key(s) {unknown}; the valid '
                             f'keys are {sorted(TRAIN_CFG_DEFAULTS)}')
        cfg = {k: train_cfg.get(k, v) for k, v in TRAIN_CFG_DEFAULTS.items()}
        p = cfg['self_aligned']
        if (isinstance(p, bool) or not isinstance(p, (int, float))
                or not 0 <= p <= 1):
            raise ValueError('train_cfg.self_aligned must be a number in '
                             f'[0, 1], got {p!r}')
        sampling = self.sampling_cfg(test_cfg or {})
        steps = list(sampling['steps'])
        timesteps = TrainingTimesteps(
            cfg['timesteps'],
            self.diffusion.num_timesteps,
            sampler_steps=steps,
            prefix='train_cfg.')
        weight = sampling['ensemble_weight']
        return TrainingSettings(
            timesteps=timesteps,
            self_aligned=float(p),
            first_step=steps[0],
            ensemble_weight=EQ15_WEIGHT if weight == 'auto' else weight)

    def loss(self, inputs: List[Tensor], e2e_probs: Tensor,
             batch_data_samples: SampleList,
             train_cfg: Optional[ConfigType]) -> Dict[str, Tensor]:
        """The training step of Algorithm 1.

        x0 is the one-hot ground truth, x̂0 the E2E output, R = x̂0 − x0,
        x̄0 = x0 − R; t from ``timesteps`` (U{1..T} in the paper),
        ε ~ N(0, I), x̄t = √ᾱt·x̄0 + √(1−ᾱt)·ε (Eq. 17 with ᾱt, see
        :meth:`GaussianDiffusion.q_sample`), loss ‖ε − εθ(x̄t, I0, t)‖².
        Ignored pixels have R = 0 and no weight in the loss.

        Self-aligned training (p = ``self_aligned``; as DDPS's diffusion
        on the first prediction and DDP's self-aligned denoising): with
        probability p a batch first runs the network at the sampler's
        first step and takes its detached x̄0 estimate; x̄t is then built
        from that estimate, and the network learns the way from it to the
        true x̄0 (the target of the same x̄t). ``loss_ensemble`` adds task
        losses of the ensemble read from the output.

        Args:
            inputs (list[Tensor]): Frozen E2E backbone features.
            e2e_probs (Tensor): E2E probabilities (N, K, H', W'), any
                resolution.
            batch_data_samples (list[SegDataSample]): With ``gt_sem_seg``.
            train_cfg (dict | TrainingSettings, optional): The training
                keys (see :meth:`training_settings`); the segmentor passes
                them read once.

        Returns:
            dict[str, Tensor]: The losses.
        """
        settings = train_cfg if isinstance(
            train_cfg, TrainingSettings) else self.training_settings(train_cfg)
        cond, x_hat, onehot, valid = self.training_maps(
            inputs, e2e_probs, batch_data_samples)
        x0 = torch.where(valid, probs_to_analog(onehot, self.scale), x_hat)
        # x̄0 = x0 − R = 2·x0 − x̂0 (R = 0 where ignored, as x0 = x̂0 there)
        x_start = 2 * x0 - x_hat if self.residual_target else x0
        t = settings.timesteps.draw(x0.shape[0], x0.device)
        noise = torch.randn_like(x_start)
        source = x_start
        aligned = settings.self_aligned > 0
        if aligned:  # a host draw (no device synchronisation)
            aligned = float(torch.rand(())) < settings.self_aligned
        if aligned:
            source = self.first_estimate(cond, x_hat, x_start,
                                         settings.first_step)
        x_t = self.diffusion.q_sample(source, t, noise)
        if source is not x_start:
            # the noise that takes the true x̄0 to this x̄t
            noise = self.diffusion.predict_eps_from_xstart(x_t, t, x_start)
        output = self.forward(cond, x_hat, x_t, t)
        target = self.diffusion.training_target(x_start, t, noise)
        losses = dict()
        for loss_decode in as_loss_list(self.loss_decode):
            add_loss(losses, loss_decode.loss_name,
                     loss_decode(output, target, weight=valid))
        if self.loss_ensemble is not None:
            for name, loss in self.task_losses(
                    self.ensemble_scores(output, x_t, t, x_hat,
                                         settings.ensemble_weight),
                    batch_data_samples, self.loss_ensemble).items():
                add_loss(losses, name, loss)
        return losses

    @torch.no_grad()
    def first_estimate(self, cond: Tensor, x_hat: Tensor, x_start: Tensor,
                       step: int) -> Tensor:
        """The network's detached x̄0 estimate at the 0-based ``step``, from
        ``x_start`` diffused there: what the sampler's first step gives."""
        t = torch.full((x_start.shape[0], ),
                       step,
                       dtype=torch.long,
                       device=x_start.device)
        x_t = self.diffusion.q_sample(x_start, t)
        return self.diffusion.predict_start(
            self.forward(cond, x_hat, x_t, t).float(),
            x_t,
            t,
            clip_bound=self.target_bound)

    def ensemble_scores(self, output: Tensor, x_t: Tensor, t: Tensor,
                        x_hat: Tensor, weight: float) -> Tensor:
        """Class scores log p (N, K, h, w) of the ensemble
        w·x̄0 + (1 − w)·x̂0 built from the network's output at (x̄t, t), p
        normalised over classes after clamping at :data:`MIN_PROB` (as
        :meth:`predict` normalises)."""
        estimate = self.diffusion.predict_start(
            output.float(), x_t, t, clip_bound=self.target_bound)
        out = (
            weight * estimate +
            (1 - weight) * x_hat if self.residual_target else estimate)
        probs = analog_to_probs(out, self.scale).clamp(min=MIN_PROB)
        return (probs / probs.sum(1, keepdim=True)).log()

    def sampling_cfg(self, test_cfg: ConfigType) -> dict:
        """The settings of ``test_cfg``, missing ones from
        :data:`TEST_CFG_DEFAULTS`, checked: the sampling keys by the
        diffusion core (:meth:`GaussianDiffusion.sampling_options`, which
        also resolves ``num_steps`` and ``clip_denoised`` and lists the
        ``steps``), the head's own keys here. Pure Python, no tensor is
        touched.

        Raises:
            ValueError: Naming a bad setting.
        """
        cfg = self.diffusion.sampling_options(
            test_cfg, prefix='test_cfg.')._asdict()
        for key in ('ensemble_weight', 'autocast', 'ensemble_parts'):
            cfg[key] = test_cfg.get(key, TEST_CFG_DEFAULTS[key])
        weight = cfg['ensemble_weight']
        if weight != 'auto' and (isinstance(weight, bool)
                                 or not isinstance(weight, (int, float))
                                 or not 0 <= weight <= 1):
            raise ValueError('test_cfg.ensemble_weight must be a number in '
                             f"[0, 1] or 'auto', got {weight!r}")
        if not isinstance(cfg['ensemble_parts'], bool):
            raise ValueError('test_cfg.ensemble_parts must be a bool, got '
                             f'{cfg["ensemble_parts"]!r}')
        if cfg['autocast'] not in AUTOCAST_DTYPES:
            raise ValueError(f'test_cfg.autocast must be one of '
                             f'{sorted(AUTOCAST_DTYPES)}, got '
                             f'{cfg["autocast"]!r}')
        return cfg

    def check_test_cfg(self, test_cfg: ConfigType) -> None:
        """Raise ``ValueError`` naming a bad sampling setting of
        ``test_cfg`` (see :meth:`sampling_cfg`), before any work."""
        self.sampling_cfg(test_cfg)

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
                ``ensemble_weight`` (w: the answer is
                w·x̄0 + (1 − w)·x̂0; 0.5 is Eq. 15; 'auto' the weight stored
                in ``chosen_ensemble_weight``, ½ when none was chosen) and
                ``ensemble_parts``. Missing keys take
                :data:`TEST_CFG_DEFAULTS`.

        Returns:
            dict[str, Tensor]: ``probs``, the ensemble probabilities
            (N, K, h, w) normalised over classes (the mean over samples),
            and ``uncertainty`` (N, 1, h, w): the class-averaged standard
            deviation of the probabilities across samples (0 for one
            sample). With ``ensemble_parts`` also ``sample_probs``, x̄0 as
            probabilities (mean over samples, not clamped), and
            ``e2e_head_probs``, x̂0 at the head's resolution: the ensemble's
            class order is that of w·sample_probs + (1 − w)·e2e_head_probs
            for any w.
        """
        cfg = self.sampling_cfg(test_cfg)
        num_samples, start_step = cfg['num_samples'], cfg['start_step']
        device = e2e_probs.device
        dtype = autocast_dtype(cfg['autocast'], device)
        precision = torch.autocast(
            device.type, dtype=dtype) if dtype else contextlib.nullcontext()
        with precision:
            cond = self.encode_condition(inputs, input_size)
        x_hat = self.encode_e2e(e2e_probs, cond.shape[-2:])
        # num_samples copies in one batch; the condition is computed once
        cond = cond.repeat_interleave(num_samples, dim=0)
        x_hat = x_hat.repeat_interleave(num_samples, dim=0)
        generator = None
        if cfg['seed'] is not None:
            # on the model's device: no host draw, no host-to-device copy;
            # a seed gives the same samples on the same kind of device
            generator = torch.Generator(device=x_hat.device).manual_seed(
                int(cfg['seed']))

        x_init = None
        if start_step is not None:
            # truncated diffusion: x̄_T' = √ᾱ_T'·x̂0 + √(1−ᾱ_T')·ε
            noise = draw_noise(x_hat.shape, generator, x_hat.device,
                               x_hat.dtype)
            t_init = torch.full((x_hat.shape[0], ),
                                start_step - 1,
                                dtype=torch.long,
                                device=x_hat.device)
            x_init = self.diffusion.q_sample(x_hat, t_init, noise)

        def model_fn(x_t: Tensor, t: Tensor) -> Tensor:
            with precision:
                return self.forward(cond, x_hat, x_t, t).float()

        x_start = self.diffusion.sample(
            model_fn,
            tuple(x_hat.shape),
            noise=x_init,
            start_step=start_step,
            sampler=cfg['sampler'],
            num_steps=cfg['num_steps'],
            eta=cfg['eta'],
            generator=generator,
            device=x_hat.device,
            dtype=x_hat.dtype,
            clip_bound=self.target_bound if cfg['clip_denoised'] else None)
        weight = self.ensemble_weight(cfg['ensemble_weight'])
        # Eq. 15 (w = ½): the two learners err in opposite directions
        out = (
            weight * x_start +
            (1 - weight) * x_hat if self.residual_target else x_start)
        probs = analog_to_probs(out, self.scale).clamp(min=0)
        probs = probs / probs.sum(1, keepdim=True).clamp(min=1e-6)
        parts = dict()
        if cfg['ensemble_parts'] and self.residual_target:
            # the ensemble is linear in w before the clamp: w·these + ...
            parts = dict(
                sample_probs=analog_to_probs(x_start, self.scale).unflatten(
                    0, (-1, num_samples)).mean(1),
                e2e_head_probs=analog_to_probs(x_hat[::num_samples],
                                               self.scale))
        if num_samples == 1:  # no spread to measure
            return dict(
                probs=probs,
                uncertainty=probs.new_zeros((probs.shape[0], 1) +
                                            probs.shape[2:]),
                **parts)
        probs = probs.unflatten(0, (-1, num_samples))
        uncertainty = probs.std(1, unbiased=False).mean(1, keepdim=True)
        return dict(probs=probs.mean(1), uncertainty=uncertainty, **parts)

    def ensemble_weight(self, weight) -> Union[float, Tensor]:
        """w of the ensemble: a number as it is; 'auto' the chosen weight
        as a 0-dim tensor (no host synchronisation), or ½ (Eq. 15) when
        none was chosen."""
        if weight != 'auto':
            return float(weight)
        chosen = self.chosen_ensemble_weight
        return torch.where(chosen < 0, torch.full_like(chosen, EQ15_WEIGHT),
                           chosen).float()
