# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""The reverse-process samplers: one class per sampler.

A sampler's :meth:`~Sampler.step` takes the network's raw output at step
``t``, lets :meth:`GaussianDiffusion.predict_start_and_eps` interpret it
once (by the diffusion's ``prediction_type``) and clip it once, and returns
``x_{t_prev}`` together with the predicted ``x_0`` and ``eps``, as
diffusers' ``step``. It never calls the network: the loop of
:meth:`GaussianDiffusion.sample` does.

To add a sampler, write one :class:`Sampler` subclass here (its
:meth:`~Sampler.update` and :meth:`~Sampler.needs_noise`), decorated with
:func:`register_sampler`; ``test_cfg.sampler`` then takes its name.
"""
from typing import TYPE_CHECKING, Any, Dict, NamedTuple, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:  # pragma: no cover
    from .gaussian_diffusion import GaussianDiffusion


def check_eta(eta: Any, prefix: str = '') -> float:
    """``eta`` as a float, or ``ValueError`` unless it is a number in
    [0, 1] (above 1 DDIM's σ exceeds the noise the step keeps)."""
    if (isinstance(eta, bool) or not isinstance(eta, (int, float, np.number))
            or not 0 <= eta <= 1):
        raise ValueError(f'{prefix}eta must be a number in [0, 1], got '
                         f'{eta!r}')
    return float(eta)


class StepOutput(NamedTuple):
    """What one reverse step gives.

    Attributes:
        prev_sample (Tensor): ``x_{t_prev}``, shape ``(N, C, H, W)``.
        pred_x0 (Tensor): The ``x_0`` predicted at step ``t`` (clipped if
            asked).
        pred_eps (Tensor): The noise predicted at step ``t`` (consistent
            with ``pred_x0``).
    """
    prev_sample: Tensor
    pred_x0: Tensor
    pred_eps: Tensor


class Sampler:
    """A reverse-process update ``x_t -> x_{t_prev}``.

    Attributes:
        name (str): The name ``test_cfg.sampler`` takes.
        all_steps_only (bool): The sampler runs every step ``T' - 1, ...,
            0`` (``num_steps=None``) and no subset of them.
        clips_by_default (bool): What ``clip_denoised=None`` means for it
            (:func:`~.sampling_options.sampling_options`).
    """
    name = ''
    all_steps_only = False
    clips_by_default = False

    def needs_noise(self, t: int, t_prev: int, eta: float) -> bool:
        """Whether :meth:`step` draws ``z`` at this step (decided on the
        host, so the sampling loop draws exactly what it uses)."""
        raise NotImplementedError

    def step(self,
             diffusion: 'GaussianDiffusion',
             model_output: Tensor,
             t: int,
             t_prev: int,
             x_t: Tensor,
             *,
             eta: float = 0.0,
             noise: Optional[Tensor] = None,
             clip_bound: Optional[float] = None) -> StepOutput:
        """One step ``x_t -> x_{t_prev}``: the output is interpreted once
        (:meth:`GaussianDiffusion.predict_start_and_eps`, which clips), then
        :meth:`update` moves ``x_t``.

        Args:
            diffusion (GaussianDiffusion): The schedule (on ``x_t``'s
                device).
            model_output (Tensor): The network's raw output at ``(x_t, t)``
                (its meaning is ``diffusion.prediction_type``), of shape
                ``(N, C, H, W)``.
            t (int): Current 0-based step.
            t_prev (int): Next 0-based step, ``-1 <= t_prev < t``; ``-1``
                ends at ``x_0``.
            x_t (Tensor): Current sample of shape ``(N, C, H, W)``.
            eta (float): Stochasticity (DDIM); 0 is deterministic.
            noise (Tensor, optional): ``z`` of ``x_t``'s shape, used when
                :meth:`needs_noise`; ``torch.randn_like(x_t)`` if None.
            clip_bound (float, optional): Clip the predicted ``x_0`` to
                ``[-c, c]`` (and re-derive ``eps`` from it).

        Returns:
            StepOutput: ``x_{t_prev}``, and the predicted ``x_0`` and
            ``eps``, each with ``x_t``'s shape and dtype.
        """
        T = diffusion.num_timesteps
        if not 0 <= t < T:
            raise ValueError(f't must lie in [0, {T - 1}], got {t!r}')
        if not -1 <= t_prev < t:
            raise ValueError(f't_prev must lie in [-1, {t - 1}], got '
                             f'{t_prev!r}')
        check_eta(eta)
        self.check_steps(t, t_prev)
        assert model_output.shape == x_t.shape, (
            f'model_output shape {tuple(model_output.shape)} != x_t shape '
            f'{tuple(x_t.shape)}')
        assert noise is None or noise.shape == x_t.shape, (
            f'noise shape {tuple(noise.shape)} != x_t shape '
            f'{tuple(x_t.shape)}')
        x0, eps = diffusion.predict_start_and_eps(
            model_output, x_t, t, clip_bound=clip_bound)
        prev, sigma = self.update(diffusion, x0, eps, x_t, t, t_prev, eta)
        if self.needs_noise(t, t_prev, eta):
            if noise is None:
                noise = torch.randn_like(x_t)
            prev = prev + sigma * noise.to(device=x_t.device, dtype=x_t.dtype)
        return StepOutput(prev, x0, eps)

    def check_steps(self, t: int, t_prev: int) -> None:
        """Raise ``ValueError`` if the sampler cannot step from ``t`` to
        ``t_prev`` (any ``-1 <= t_prev < t`` here)."""

    def update(self, diffusion: 'GaussianDiffusion', x0: Tensor, eps: Tensor,
               x_t: Tensor, t: int, t_prev: int,
               eta: float) -> Tuple[Tensor, Tensor]:
        """The sampler's maths: the mean of ``x_{t_prev}`` and the scale
        ``sigma`` (a 0-dim tensor) of the noise :meth:`step` adds to it when
        :meth:`needs_noise`.

        Args:
            diffusion (GaussianDiffusion): The schedule.
            x0 (Tensor): The predicted ``x_0``, ``(N, C, H, W)``.
            eps (Tensor): The predicted noise, consistent with ``x0``.
            x_t (Tensor): Current sample.
            t (int): Current 0-based step.
            t_prev (int): Next 0-based step (``-1``: the end).
            eta (float): Stochasticity.

        Returns:
            tuple[Tensor, Tensor]: The mean and ``sigma``.
        """
        raise NotImplementedError


#: the samplers by name, filled by :func:`register_sampler`
SAMPLERS: Dict[str, Sampler] = {}


def register_sampler(cls: type) -> type:
    """Class decorator: make ``cls`` available as ``sampler=cls.name``."""
    if not cls.name or cls.name in SAMPLERS:
        raise ValueError(f'sampler name {cls.name!r} is empty or taken')
    SAMPLERS[cls.name] = cls()
    return cls


@register_sampler
class DDPMSampler(Sampler):
    """Ancestral DDPM (Ho et al. 2020; the paper's Algorithm 2).

    ``x_{t-1} = 1/sqrt(alpha_t) * (x_t - beta_t / sqrt(1 - alpha_bar_t) *
    eps) + sigma_t * z`` with ``sigma_t^2 = beta_tilde_t`` (Eq. 10, 22-23)
    and ``z = 0`` at the last step (paper's ``t = 1``). With a clipped
    ``x_0`` this is the posterior mean ``mu~(x_t, clip(x_0))`` (Eq. 7).
    Consecutive steps only (``t_prev = t - 1``); ``eta`` is ignored.
    """
    name = 'ddpm'
    all_steps_only = True

    def needs_noise(self, t: int, t_prev: int, eta: float) -> bool:
        return t > 0

    def check_steps(self, t: int, t_prev: int) -> None:
        if t_prev != t - 1:
            raise ValueError(f"sampler='ddpm' steps from t to t - 1, got "
                             f't={t}, t_prev={t_prev}')

    def update(self, diffusion: 'GaussianDiffusion', x0: Tensor, eps: Tensor,
               x_t: Tensor, t: int, t_prev: int,
               eta: float) -> Tuple[Tensor, Tensor]:
        d = diffusion
        eps_coef = d.betas[t] / d.sqrt_one_minus_alphas_cumprod[t]
        # Eq. 10: mu_theta = (x_t - beta_t / sqrt(1 - a_bar_t) eps) / sqrt(a_t)
        mean = d.sqrt_recip_alphas[t] * (x_t - eps_coef * eps)
        # Eq. 22-23: sigma_t^2 = beta_tilde_t.
        return mean, d.posterior_variance[t].sqrt()


@register_sampler
class DDIMSampler(Sampler):
    """DDIM (Song et al. 2021, Eq. 12), any subset of the steps.

    ``x_{t_prev} = sqrt(alpha_bar_prev) x_0 + sqrt(1 - alpha_bar_prev -
    sigma^2) eps + sigma z`` with ``sigma = eta * sqrt((1 - alpha_bar_prev)
    / (1 - alpha_bar_t)) * sqrt(1 - alpha_bar_t / alpha_bar_prev)``; ``eta
    = 0`` is deterministic, ``eta = 1`` over consecutive steps is DDPM.
    """
    name = 'ddim'
    # at large t, x_0 = (x_t - sqrt(1 - a_bar_t) eps) / sqrt(a_bar_t)
    # amplifies the error of eps by up to 1 / sqrt(a_bar_T): few steps
    # need the clip
    clips_by_default = True

    def needs_noise(self, t: int, t_prev: int, eta: float) -> bool:
        # sigma > 0 exactly when eta > 0 and alpha_bar_prev < 1
        return eta > 0 and t_prev >= 0

    def update(self, diffusion: 'GaussianDiffusion', x0: Tensor, eps: Tensor,
               x_t: Tensor, t: int, t_prev: int,
               eta: float) -> Tuple[Tensor, Tensor]:
        a_t = diffusion.alphas_cumprod[t]
        a_prev = diffusion.alphas_cumprod_prev[t_prev + 1]  # 1 at t_prev = -1
        sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).sqrt()
        dir_coef = (1 - a_prev - sigma**2).clamp(min=0).sqrt()
        return a_prev.sqrt() * x0 + dir_coef * eps, sigma
