# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""Network-free Gaussian diffusion (DDPM and DDIM) for ResEnsemble-DDPM.

Equation numbers without a citation refer to the ResEnsemble-DDPM paper
(Shi, Dong et al. 2023); the DDIM update follows Song et al. 2021, Eq. 12.
Timesteps are 0-based: index ``t`` is the paper's timestep ``t + 1``.
"""
import math
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from .schedules import get_beta_schedule

SAMPLERS = ('ddpm', 'ddim')
# what the network predicts: the noise (Ho et al. 2020; the paper), x_0
# itself, or v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x_0 (Salimans &
# Ho 2022)
PREDICTION_TYPES = ('epsilon', 'sample', 'v')


def check_prediction_type(prediction_type: str) -> None:
    """Raise ``ValueError`` unless ``prediction_type`` is one of
    :data:`PREDICTION_TYPES`."""
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f'Unknown prediction_type {prediction_type!r}; '
                         f'valid choices are {PREDICTION_TYPES}')


def _extract_into_tensor(
        arr: torch.Tensor,
        timesteps: torch.Tensor,
        broadcast_shape: Sequence[int],
        *,
        dtype: Optional[torch.dtype] = None,
        device: Optional[torch.device] = None) -> torch.Tensor:
    """Gather ``arr[timesteps]`` and broadcast it to ``broadcast_shape``.

    Args:
        arr (Tensor): float64 CPU schedule of shape ``(T,)``.
        timesteps (Tensor): LongTensor of shape ``(N,)``, 0-based.
        broadcast_shape (Sequence[int]): Target shape ``(N, C, H, W)``.
        dtype (torch.dtype, optional): Target dtype; defaults to ``arr``'s.
        device (torch.device, optional): Target device; defaults to
            ``timesteps``' device.

    Returns:
        Tensor: Shape ``broadcast_shape``; gathered in float64, then cast.
    """
    assert timesteps.ndim == 1 and timesteps.shape[0] == broadcast_shape[0], (
        f'timesteps must have shape ({broadcast_shape[0]},), got '
        f'{tuple(timesteps.shape)}')
    device = timesteps.device if device is None else device
    res = arr[timesteps.cpu()].to(device=device, dtype=dtype or arr.dtype)
    return res.reshape((-1, ) + (1, ) * (len(broadcast_shape) - 1)).expand(
        tuple(broadcast_shape))


class GaussianDiffusion:
    """Gaussian diffusion of Ho et al. 2020 as used by ResEnsemble-DDPM.

    A plain Python class (not an ``nn.Module``). The schedule arrays are
    float64 CPU tensors of shape ``(T,)`` and are cast to the dtype and
    device of the input at use. The denoising network is never called
    except through the ``eps_fn`` callback of :meth:`sample`.

    Args:
        num_timesteps (int): Number of diffusion steps ``T``.
        beta_schedule (str): ``'linear'`` (Eq. 24) or ``'cosine'``.
        beta_start (float): ``beta_1`` of the linear schedule.
        beta_end (float): ``beta_T`` of the linear schedule.
    """

    def __init__(self,
                 num_timesteps: int = 1000,
                 beta_schedule: str = 'linear',
                 *,
                 beta_start: float = 1e-4,
                 beta_end: float = 2e-2) -> None:
        betas = get_beta_schedule(beta_schedule, num_timesteps, beta_start,
                                  beta_end)
        self.num_timesteps = int(num_timesteps)
        self.beta_schedule = beta_schedule
        alphas = 1.0 - betas
        alphas_cumprod = np.cumprod(alphas)  # alpha_bar_t = prod_s alpha_s
        alphas_cumprod_prev = np.append(1.0, alphas_cumprod[:-1])
        # Eq. 22-23: posterior variance beta_tilde_t (0 at t = 1).
        posterior_variance = (
            betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod))

        def as_tensor(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a, np.float64))

        self.betas = as_tensor(betas)
        self.alphas = as_tensor(alphas)
        self.alphas_cumprod = as_tensor(alphas_cumprod)
        self.alphas_cumprod_prev = as_tensor(alphas_cumprod_prev)
        self.sqrt_alphas_cumprod = as_tensor(np.sqrt(alphas_cumprod))
        self.sqrt_one_minus_alphas_cumprod = as_tensor(
            np.sqrt(1.0 - alphas_cumprod))
        self.sqrt_recip_alphas_cumprod = as_tensor(
            np.sqrt(1.0 / alphas_cumprod))
        self.sqrt_recipm1_alphas_cumprod = as_tensor(
            np.sqrt(1.0 / alphas_cumprod - 1.0))
        self.sqrt_recip_alphas = as_tensor(np.sqrt(1.0 / alphas))
        self.posterior_variance = as_tensor(posterior_variance)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(num_timesteps='
                f'{self.num_timesteps}, beta_schedule={self.beta_schedule!r})')

    # ------------------------------------------------------------------
    # Forward process and x_0 prediction
    # ------------------------------------------------------------------
    def _check_t(self, t: torch.Tensor, x: torch.Tensor) -> None:
        assert t.ndim == 1 and t.shape[0] == x.shape[0], (
            f't must have shape ({x.shape[0]},), got {tuple(t.shape)}')
        t_cpu = t.cpu()
        if t_cpu.numel() and (t_cpu.min() < 0
                              or t_cpu.max() >= self.num_timesteps):
            raise ValueError(
                f'timesteps must lie in [0, {self.num_timesteps - 1}], got '
                f'{t_cpu.tolist()}')

    def q_sample(self,
                 x_start: torch.Tensor,
                 t: torch.Tensor,
                 noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Diffuse ``x_start`` to step ``t``: sample ``q(x_t | x_0)``.

        ``x_t = sqrt(alpha_bar_t) * x_0 + sqrt(1 - alpha_bar_t) * eps``
        (Eq. 5). The paper's Eq. 17 and Algorithm 1 print ``sqrt(alpha_t)``
        and ``(1 - alpha_t)`` instead of ``alpha_bar_t``: a typo, since with
        ``alpha_t`` the sample ``x_T`` would keep ~99% of ``x_0`` and
        Algorithm 2 could not start from pure noise. The cumulative product
        ``alpha_bar_t`` of Eq. 5 is used here.

        Args:
            x_start (Tensor): ``x_0`` of shape ``(N, C, H, W)``.
            t (Tensor): LongTensor of shape ``(N,)``, 0-based steps.
            noise (Tensor, optional): ``eps`` of ``x_start``'s shape;
                ``torch.randn_like(x_start)`` if None.

        Returns:
            Tensor: ``x_t`` with ``x_start``'s shape, dtype and device.
        """
        self._check_t(t, x_start)
        if noise is None:
            noise = torch.randn_like(x_start)
        assert noise.shape == x_start.shape, (
            f'noise shape {tuple(noise.shape)} != x_start shape '
            f'{tuple(x_start.shape)}')
        kw = dict(dtype=x_start.dtype, device=x_start.device)
        # Eq. 5: q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)
        return (_extract_into_tensor(self.sqrt_alphas_cumprod, t,
                                     x_start.shape, **kw) * x_start +
                _extract_into_tensor(self.sqrt_one_minus_alphas_cumprod, t,
                                     x_start.shape, **kw) * noise)

    def predict_xstart_from_eps(self, x_t: torch.Tensor, t: torch.Tensor,
                                eps: torch.Tensor) -> torch.Tensor:
        """Predict ``x_0`` from the noise by inverting Eq. 5.

        ``x_0 = (x_t - sqrt(1 - alpha_bar_t) * eps) / sqrt(alpha_bar_t)``.

        Args:
            x_t (Tensor): Shape ``(N, C, H, W)``.
            t (Tensor): LongTensor of shape ``(N,)``, 0-based steps.
            eps (Tensor): Predicted noise of ``x_t``'s shape.

        Returns:
            Tensor: Predicted ``x_0`` with ``x_t``'s shape and dtype.
        """
        self._check_t(t, x_t)
        assert eps.shape == x_t.shape, (
            f'eps shape {tuple(eps.shape)} != x_t shape {tuple(x_t.shape)}')
        kw = dict(dtype=x_t.dtype, device=x_t.device)
        return (_extract_into_tensor(self.sqrt_recip_alphas_cumprod, t,
                                     x_t.shape, **kw) * x_t -
                _extract_into_tensor(self.sqrt_recipm1_alphas_cumprod, t,
                                     x_t.shape, **kw) * eps)

    def predict_eps_from_xstart(self, x_t: torch.Tensor, t: torch.Tensor,
                                x_start: torch.Tensor) -> torch.Tensor:
        """The noise that takes ``x_0`` to ``x_t`` (Eq. 5 solved for eps).

        ``eps = (x_t / sqrt(alpha_bar_t) - x_0) /
        sqrt(1 / alpha_bar_t - 1)``.

        Args:
            x_t (Tensor): Shape ``(N, C, H, W)``.
            t (Tensor): LongTensor of shape ``(N,)``, 0-based steps.
            x_start (Tensor): ``x_0`` of ``x_t``'s shape.

        Returns:
            Tensor: The noise, with ``x_t``'s shape and dtype.
        """
        self._check_t(t, x_t)
        assert x_start.shape == x_t.shape, (x_start.shape, x_t.shape)
        kw = dict(dtype=x_t.dtype, device=x_t.device)
        return ((_extract_into_tensor(self.sqrt_recip_alphas_cumprod, t,
                                      x_t.shape, **kw) * x_t - x_start) /
                _extract_into_tensor(self.sqrt_recipm1_alphas_cumprod, t,
                                     x_t.shape, **kw))

    def training_target(self, prediction_type: str, x_start: torch.Tensor,
                        t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """What the network learns to output for ``x_t = q_sample(...)``.

        Args:
            prediction_type (str): One of :data:`PREDICTION_TYPES`.
            x_start (Tensor): ``x_0`` of shape ``(N, C, H, W)``.
            t (Tensor): LongTensor of shape ``(N,)``, 0-based steps.
            noise (Tensor): The noise of ``q_sample``.

        Returns:
            Tensor: ``noise`` ('epsilon'), ``x_start`` ('sample') or
            ``v = sqrt(alpha_bar_t) noise - sqrt(1 - alpha_bar_t) x_0``.
        """
        check_prediction_type(prediction_type)
        if prediction_type == 'epsilon':
            return noise
        if prediction_type == 'sample':
            return x_start
        self._check_t(t, x_start)
        kw = dict(dtype=x_start.dtype, device=x_start.device)
        return (_extract_into_tensor(self.sqrt_alphas_cumprod, t,
                                     x_start.shape, **kw) * noise -
                _extract_into_tensor(self.sqrt_one_minus_alphas_cumprod, t,
                                     x_start.shape, **kw) * x_start)

    def eps_from_model_output(self, prediction_type: str,
                              model_output: torch.Tensor, x_t: torch.Tensor,
                              t: torch.Tensor) -> torch.Tensor:
        """Convert a network output of ``prediction_type`` to the noise.

        Args:
            prediction_type (str): One of :data:`PREDICTION_TYPES`.
            model_output (Tensor): Network output of ``x_t``'s shape.
            x_t (Tensor): Shape ``(N, C, H, W)``.
            t (Tensor): LongTensor of shape ``(N,)``, 0-based steps.

        Returns:
            Tensor: The predicted noise.
        """
        check_prediction_type(prediction_type)
        if prediction_type == 'epsilon':
            return model_output
        if prediction_type == 'sample':
            return self.predict_eps_from_xstart(x_t, t, model_output)
        # v: x_0 = sqrt(alpha_bar) x_t - sqrt(1 - alpha_bar) v
        kw = dict(dtype=x_t.dtype, device=x_t.device)
        x_start = (
            _extract_into_tensor(self.sqrt_alphas_cumprod, t, x_t.shape, **kw)
            * x_t - _extract_into_tensor(self.sqrt_one_minus_alphas_cumprod, t,
                                         x_t.shape, **kw) * model_output)
        return self.predict_eps_from_xstart(x_t, t, x_start)

    # ------------------------------------------------------------------
    # Reverse process
    # ------------------------------------------------------------------
    def _check_step(self, model_output: torch.Tensor, t: int,
                    x_t: torch.Tensor, noise: Optional[torch.Tensor]) -> None:
        if not 0 <= t < self.num_timesteps:
            raise ValueError(
                f't must lie in [0, {self.num_timesteps - 1}], got {t!r}')
        assert model_output.shape == x_t.shape, (
            f'model_output shape {tuple(model_output.shape)} != x_t shape '
            f'{tuple(x_t.shape)}')
        assert noise is None or noise.shape == x_t.shape, (
            f'noise shape {tuple(noise.shape)} != x_t shape '
            f'{tuple(x_t.shape)}')

    def ddpm_step(self,
                  model_output: torch.Tensor,
                  t: int,
                  x_t: torch.Tensor,
                  *,
                  noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        """One ancestral DDPM step ``x_t -> x_{t-1}`` (Algorithm 2).

        ``x_{t-1} = 1/sqrt(alpha_t) * (x_t - beta_t / sqrt(1 - alpha_bar_t)
        * eps) + sigma_t * z`` with ``sigma_t^2 = beta_tilde_t``.

        Args:
            model_output (Tensor): Predicted noise ``eps_theta(x_t, t)`` of
                shape ``(N, C, H, W)``.
            t (int): Current 0-based step (paper's ``t + 1``).
            x_t (Tensor): Current sample of shape ``(N, C, H, W)``.
            noise (Tensor, optional): ``z`` of ``x_t``'s shape;
                ``torch.randn_like(x_t)`` if None. Ignored at ``t = 0``
                (``z = 0`` at the paper's last step ``t = 1``).

        Returns:
            Tensor: ``x_{t-1}`` with ``x_t``'s shape and dtype.
        """
        self._check_step(model_output, t, x_t, noise)
        eps = model_output.to(x_t.dtype)
        eps_coef = (self.betas[t] /
                    self.sqrt_one_minus_alphas_cumprod[t]).item()
        # Eq. 10: mu_theta = (x_t - beta_t / sqrt(1 - a_bar_t) eps) / sqrt(a_t)
        mean = self.sqrt_recip_alphas[t].item() * (x_t - eps_coef * eps)
        if t == 0:
            return mean
        if noise is None:
            noise = torch.randn_like(x_t)
        # Eq. 22-23: sigma_t^2 = beta_tilde_t.
        sigma = math.sqrt(self.posterior_variance[t].item())
        return mean + sigma * noise.to(device=x_t.device, dtype=x_t.dtype)

    def ddim_step(self,
                  model_output: torch.Tensor,
                  t: int,
                  t_prev: int,
                  x_t: torch.Tensor,
                  *,
                  eta: float = 0.0,
                  noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        """One DDIM step ``x_t -> x_{t_prev}`` (Song et al. 2021, Eq. 12).

        Args:
            model_output (Tensor): Predicted noise of shape ``(N, C, H, W)``.
            t (int): Current 0-based step.
            t_prev (int): Next 0-based step, ``-1 <= t_prev < t``; ``-1``
                means ``alpha_bar_prev = 1`` (the step returns ``x_0``).
            x_t (Tensor): Current sample of shape ``(N, C, H, W)``.
            eta (float): Stochasticity; 0 is deterministic DDIM, 1 with
                consecutive steps equals DDPM. Defaults to 0.
            noise (Tensor, optional): ``z`` of ``x_t``'s shape, used only
                if ``sigma > 0``; ``torch.randn_like(x_t)`` if None.

        Returns:
            Tensor: ``x_{t_prev}`` with ``x_t``'s shape and dtype.
        """
        self._check_step(model_output, t, x_t, noise)
        if not -1 <= t_prev < t:
            raise ValueError(f't_prev must lie in [-1, {t - 1}], got '
                             f'{t_prev!r}')
        if eta < 0:
            raise ValueError(f'eta must be >= 0, got {eta!r}')
        eps = model_output.to(x_t.dtype)
        a_t = self.alphas_cumprod[t].item()
        a_prev = self.alphas_cumprod[t_prev].item() if t_prev >= 0 else 1.0
        # Song et al. 2021, Eq. 12: predicted x_0, then re-noise to t_prev.
        x0_pred = (x_t - math.sqrt(1.0 - a_t) * eps) / math.sqrt(a_t)
        sigma = eta * math.sqrt(
            (1.0 - a_prev) / (1.0 - a_t)) * math.sqrt(1.0 - a_t / a_prev)
        dir_coef = math.sqrt(max(1.0 - a_prev - sigma**2, 0.0))
        x_prev = math.sqrt(a_prev) * x0_pred + dir_coef * eps
        if sigma > 0:
            if noise is None:
                noise = torch.randn_like(x_t)
            x_prev = x_prev + sigma * noise.to(
                device=x_t.device, dtype=x_t.dtype)
        return x_prev

    def check_sampler(self,
                      sampler: str,
                      num_steps: Optional[int] = None,
                      *,
                      start_step: Optional[int] = None,
                      prefix: str = '') -> int:
        """Raise ``ValueError`` naming a bad ``sampler``, ``num_steps`` or
        ``start_step``.

        Args:
            sampler (str): One of :data:`SAMPLERS`.
            num_steps (int, optional): ``1 <= K <= T'``; None means all
                ``T'`` steps, the only choice for 'ddpm'.
            start_step (int, optional): ``T'``, the (1-based) step the
                reverse process starts at, ``1 <= T' <= T``; None means T.
            prefix (str): Put before the option names in the messages,
                e.g. ``'test_cfg.'``.

        Returns:
            int: The number of sampling steps K.
        """
        if sampler not in SAMPLERS:
            raise ValueError(f'{prefix}sampler={sampler!r} is not one of '
                             f'{list(SAMPLERS)}')
        T = self.num_timesteps
        if start_step is not None and (isinstance(
                start_step, bool) or not isinstance(start_step,
                                                    (int, np.integer))
                                       or not 1 <= start_step <= T):
            raise ValueError(f'{prefix}start_step must be None or an integer '
                             f'in [1, {T}], got {start_step!r}')
        start = T if start_step is None else int(start_step)
        K = start if num_steps is None else num_steps
        # raises unless K is an integer in [1, T']
        self.timesteps(K, start_step=start)
        if sampler == 'ddpm' and K != start:
            raise ValueError(
                f"{prefix}sampler='ddpm' runs all {start} steps "
                f'({prefix}num_steps=None), got {prefix}num_steps={K}; use '
                f"{prefix}sampler='ddim' for fewer")
        return K

    def timesteps(self,
                  num_steps: int,
                  start_step: Optional[int] = None) -> torch.Tensor:
        """Descending 0-based steps of a ``num_steps``-step sampler.

        Trailing even spacing ``t_k = round(k * T' / K) - 1`` for
        ``k = 1, ..., K`` (half rounded up), so ``K = 1`` gives ``[T' - 1]``
        and ``K = T'`` gives ``T' - 1, ..., 0``. ``T'`` is ``start_step``
        (a truncated reverse process) or ``T``.

        Args:
            num_steps (int): ``K`` with ``1 <= K <= T'``.
            start_step (int, optional): ``T'`` with ``1 <= T' <= T``;
                None means ``T``.

        Returns:
            Tensor: LongTensor of shape ``(K,)``, strictly decreasing.
        """
        T = self.num_timesteps if start_step is None else int(start_step)
        if (isinstance(num_steps, bool)
                or not isinstance(num_steps, (int, np.integer))
                or not 1 <= num_steps <= T):
            raise ValueError(f'num_steps must be an integer in [1, {T}], got '
                             f'{num_steps!r}')
        K = int(num_steps)
        steps = [(2 * k * T + K) // (2 * K) - 1 for k in range(K, 0, -1)]
        return torch.tensor(steps, dtype=torch.long)

    @torch.no_grad()
    def sample(self,
               eps_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
               shape: Sequence[int],
               *,
               sampler: str = 'ddpm',
               num_steps: Optional[int] = None,
               eta: float = 0.0,
               generator: Optional[torch.Generator] = None,
               noise: Optional[torch.Tensor] = None,
               device: Optional[torch.device] = None,
               dtype: torch.dtype = torch.float32,
               clip_denoised: Optional[float] = None,
               start_step: Optional[int] = None) -> torch.Tensor:
        """Run the reverse process from ``x_T`` to ``x_0`` (Algorithm 2).

        With ``start_step`` T' < T the process is truncated: it starts
        from ``noise`` taken as ``x_T'`` (for instance an initial estimate
        noised to step T' with :meth:`q_sample`, as DDPS and Resfusion
        do) and runs K steps within ``T' - 1, ..., 0``.

        Runs under ``torch.no_grad()``. Randomness comes only from
        ``generator``: ``x_T`` is drawn first (unless ``noise`` is given),
        then one draw of ``shape`` per noisy step (DDPM: every step but
        ``t = 0``; DDIM: every step with ``t_prev >= 0`` if ``eta > 0``).
        Draws are float32 on the generator's device, then moved to
        ``device``/``dtype``, so results do not depend on the target.

        Args:
            eps_fn (Callable): ``eps_fn(x_t, t)`` returns the predicted noise
                of ``x_t``'s shape; ``t`` is a LongTensor ``(N,)`` filled
                with the current 0-based step.
            shape (Sequence[int]): ``(N, C, H, W)``.
            sampler (str): ``'ddpm'`` or ``'ddim'``.
            num_steps (int, optional): Number of steps ``K``; None means all
                ``T``. ``'ddpm'`` only supports ``T``.
            eta (float): DDIM stochasticity (>= 0); ignored by ``'ddpm'``.
            generator (torch.Generator, optional): Source of randomness.
            noise (Tensor, optional): ``x_T`` (``x_T'`` with ``start_step``)
                of shape ``shape``; its device and dtype override ``device``
                and ``dtype``. Required with ``start_step``.
            device (torch.device, optional): Target device; CPU if None.
            dtype (torch.dtype): Target dtype. Defaults to float32.
            clip_denoised (float, optional): If given, the ``x_0`` predicted
                from ``eps`` at each step is clipped to ``[-c, c]`` and
                ``eps`` re-derived from it (improved-diffusion's
                ``clip_denoised``; with DDPM this is the posterior mean
                ``mu~(x_t, clip(x_0))`` of Eq. 7). Few-step DDIM needs it: at
                large ``t``, ``x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) /
                sqrt(alpha_bar_t)`` amplifies the error of ``eps`` by up to
                ``1 / sqrt(alpha_bar_T)``. None (the default) is Algorithm 2
                exactly.
            start_step (int, optional): ``T'``, the 1-based step the reverse
                process starts at (``noise`` is ``x_T'``); None means T.

        Returns:
            Tensor: ``x_0`` of shape ``shape``.
        """
        K = self.check_sampler(sampler, num_steps, start_step=start_step)
        ts = self.timesteps(K, start_step=start_step)
        if start_step is not None and noise is None:
            raise ValueError('start_step needs noise: the sample x_T\' the '
                             'truncated reverse process starts from')
        if eta < 0:
            raise ValueError(f'eta must be >= 0, got {eta!r}')
        if clip_denoised is not None and clip_denoised <= 0:
            raise ValueError(
                f'clip_denoised must be > 0 or None, got {clip_denoised!r}')
        shape = tuple(int(s) for s in shape)
        if noise is not None:
            if tuple(noise.shape) != shape:
                raise ValueError(f'noise shape {tuple(noise.shape)} != '
                                 f'shape {shape}')
            device, dtype = noise.device, noise.dtype
        device = torch.device('cpu') if device is None else torch.device(
            device)
        gen_device = device if generator is None else generator.device

        def randn() -> torch.Tensor:
            z = torch.randn(
                shape,
                generator=generator,
                device=gen_device,
                dtype=torch.float32)
            return z.to(device=device, dtype=dtype)

        x = randn() if noise is None else noise
        steps = ts.tolist()
        for i, t in enumerate(steps):
            t_batch = torch.full((shape[0], ),
                                 t,
                                 dtype=torch.long,
                                 device=device)
            eps = eps_fn(x, t_batch)
            if tuple(eps.shape) != shape:
                raise ValueError(f'eps_fn returned shape {tuple(eps.shape)}, '
                                 f'expected {shape}')
            if clip_denoised is not None:
                x_start = self.predict_xstart_from_eps(x, t_batch, eps.to(x))
                eps = self.predict_eps_from_xstart(
                    x, t_batch, x_start.clamp(-clip_denoised, clip_denoised))
            if sampler == 'ddpm':
                z = randn() if t > 0 else None
                x = self.ddpm_step(eps, t, x, noise=z)
            else:
                t_prev = steps[i + 1] if i + 1 < len(steps) else -1
                z = randn() if eta > 0 and t_prev >= 0 else None
                x = self.ddim_step(eps, t, t_prev, x, eta=eta, noise=z)
        return x
