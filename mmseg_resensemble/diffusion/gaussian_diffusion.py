# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""Network-free Gaussian diffusion (DDPM and DDIM) for ResEnsemble-DDPM.

Equation numbers without a citation refer to the ResEnsemble-DDPM paper
(Shi, Dong et al. 2023); the DDIM update follows Song et al. 2021, Eq. 12.
Timesteps are 0-based: index ``t`` is the paper's timestep ``t + 1``.
"""
from typing import (Any, Callable, Dict, Mapping, Optional, Sequence, Tuple,
                    Union)

import numpy as np
import torch
import torch.nn as nn

from .defaults import DIFFUSION, SAMPLING
from .samplers import SAMPLERS
from .sampling_options import SamplingOptions, sampling_options
from .schedules import get_beta_schedule

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

    The gather happens on ``timesteps``' device (a no-op move when ``arr``
    is there already, as the schedule of :class:`GaussianDiffusion`): no
    device-to-host copy.

    Args:
        arr (Tensor): float64 schedule of shape ``(T,)``.
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
    res = arr.to(timesteps.device)[timesteps]
    res = res.to(device=device or timesteps.device, dtype=dtype or arr.dtype)
    return res.reshape((-1, ) + (1, ) * (len(broadcast_shape) - 1)).expand(
        tuple(broadcast_shape))


class GaussianDiffusion(nn.Module):
    """Gaussian diffusion of Ho et al. 2020 as used by ResEnsemble-DDPM.

    Network-free: an ``nn.Module`` only so that it sits in the model's
    tree. The schedule is computed once in float64 and kept on the host as
    tensors of shape ``(T,)`` (neither parameters nor buffers: no state
    dict entry, no DDP broadcast, no cast by ``model.half()``); a gather
    at steps on a device uses a copy made there once
    (:meth:`schedule_on`), and one int step reads a host scalar.
    Coefficients are cast to the input's dtype at use. The denoising
    network is never called except through the ``model_fn`` callback of
    :meth:`sample`; the update of each sampler lives in
    :mod:`~mmseg_resensemble.diffusion.samplers`.

    Defaults are the paper's (:data:`~.defaults.DIFFUSION`).

    Args:
        num_timesteps (int): Number of diffusion steps ``T``.
        beta_schedule (str): ``'linear'`` (Eq. 24) or ``'cosine'``.
        beta_start (float): ``beta_1`` of the linear schedule.
        beta_end (float): ``beta_T`` of the linear schedule.
        prediction_type (str): What the network outputs, one of
            :data:`PREDICTION_TYPES`: 'epsilon' (the noise, the paper),
            'sample' (``x_0``) or 'v'. :meth:`training_target` gives its
            target and :meth:`predict_start_and_eps` interprets it.
        check_args (bool): Check the timesteps of every
            :meth:`q_sample`/``predict_*`` call (a device-to-host copy of
            ``t`` on an accelerator): for debugging and standalone use.
            Models built from a config pass False: their steps are valid by
            construction. Defaults to True.
    """

    def __init__(self,
                 num_timesteps: int = DIFFUSION['num_timesteps'],
                 beta_schedule: str = DIFFUSION['beta_schedule'],
                 *,
                 beta_start: float = DIFFUSION['beta_start'],
                 beta_end: float = DIFFUSION['beta_end'],
                 prediction_type: str = DIFFUSION['prediction_type'],
                 check_args: bool = True) -> None:
        super().__init__()
        betas = get_beta_schedule(beta_schedule, num_timesteps, beta_start,
                                  beta_end)
        check_prediction_type(prediction_type)
        self.num_timesteps = int(num_timesteps)
        self.beta_schedule = beta_schedule
        self.prediction_type = prediction_type
        self.check_args = bool(check_args)
        alphas = 1.0 - betas
        alphas_cumprod = np.cumprod(alphas)  # alpha_bar_t = prod_s alpha_s
        alphas_cumprod_prev = np.append(1.0, alphas_cumprod[:-1])
        # Eq. 22-23: posterior variance beta_tilde_t (0 at t = 1).
        posterior_variance = (
            betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod))
        schedule = dict(
            betas=betas,
            alphas_cumprod=alphas_cumprod,
            alphas_cumprod_prev=alphas_cumprod_prev,
            sqrt_alphas_cumprod=np.sqrt(alphas_cumprod),
            sqrt_one_minus_alphas_cumprod=np.sqrt(1.0 - alphas_cumprod),
            sqrt_recip_alphas_cumprod=np.sqrt(1.0 / alphas_cumprod),
            sqrt_recipm1_alphas_cumprod=np.sqrt(1.0 / alphas_cumprod - 1.0),
            sqrt_recip_alphas=np.sqrt(1.0 / alphas),
            posterior_variance=posterior_variance)
        # schedule_on's copies per device
        self._device_copies: Dict[torch.device, Dict[int, torch.Tensor]] = {}
        for name, arr in schedule.items():
            setattr(self, name,
                    torch.from_numpy(np.ascontiguousarray(arr, np.float64)))

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(num_timesteps='
                f'{self.num_timesteps}, beta_schedule={self.beta_schedule!r}, '
                f'prediction_type={self.prediction_type!r})')

    def schedule_on(self, arr: torch.Tensor,
                    device: torch.device) -> torch.Tensor:
        """The schedule ``arr`` (one of this module's float64 ``(T,)``
        tensors, kept on the host) on ``device``: copied once per device and
        kept, so that every later gather happens there without a copy."""
        device = torch.device(device)
        if arr.device == device:
            return arr
        cache = self._device_copies.setdefault(device, {})
        if id(arr) not in cache:
            cache[id(arr)] = arr.to(device)
        return cache[id(arr)]

    def _coef(self, arr: torch.Tensor, t: Union[int, torch.Tensor],
              x: torch.Tensor) -> torch.Tensor:
        """``arr[t]`` to scale ``x``: a 0-dim tensor for an int ``t``, else
        gathered and broadcast to ``x``'s shape and dtype."""
        if isinstance(t, int):
            return arr[t]
        return _extract_into_tensor(
            self.schedule_on(arr, t.device), t, x.shape, dtype=x.dtype)

    # ------------------------------------------------------------------
    # Forward process and x_0 prediction
    # ------------------------------------------------------------------
    def _check_t(self, t: torch.Tensor, x: torch.Tensor) -> None:
        assert t.ndim == 1 and t.shape[0] == x.shape[0], (
            f't must have shape ({x.shape[0]},), got {tuple(t.shape)}')
        if not self.check_args:
            return
        t_cpu = t.cpu()  # a device-to-host copy: debugging only
        if t_cpu.numel() and (t_cpu.min() < 0
                              or t_cpu.max() >= self.num_timesteps):
            raise ValueError(
                f'timesteps must lie in [0, {self.num_timesteps - 1}], got '
                f'{t_cpu.tolist()}')

    # ------------------------------------------------------------------
    # Forward process and the network's output
    # ------------------------------------------------------------------
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
        # Eq. 5: q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)
        return (
            self._coef(self.sqrt_alphas_cumprod, t, x_start) * x_start +
            self._coef(self.sqrt_one_minus_alphas_cumprod, t, x_start) * noise)

    def predict_xstart_from_eps(self, x_t: torch.Tensor, t: torch.Tensor,
                                eps: torch.Tensor) -> torch.Tensor:
        """Predict ``x_0`` from the noise by inverting Eq. 5.

        ``x_0 = (x_t - sqrt(1 - alpha_bar_t) * eps) / sqrt(alpha_bar_t)``.

        Args:
            x_t (Tensor): Shape ``(N, C, H, W)``.
            t (Tensor | int): LongTensor of shape ``(N,)`` or one int,
                0-based steps.
            eps (Tensor): Predicted noise of ``x_t``'s shape.

        Returns:
            Tensor: Predicted ``x_0`` with ``x_t``'s shape and dtype.
        """
        if not isinstance(t, int):
            self._check_t(t, x_t)
        assert eps.shape == x_t.shape, (
            f'eps shape {tuple(eps.shape)} != x_t shape {tuple(x_t.shape)}')
        return (self._coef(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t -
                self._coef(self.sqrt_recipm1_alphas_cumprod, t, x_t) * eps)

    def predict_eps_from_xstart(self, x_t: torch.Tensor, t: torch.Tensor,
                                x_start: torch.Tensor) -> torch.Tensor:
        """The noise that takes ``x_0`` to ``x_t`` (Eq. 5 solved for eps).

        ``eps = (x_t / sqrt(alpha_bar_t) - x_0) /
        sqrt(1 / alpha_bar_t - 1)``.

        Args:
            x_t (Tensor): Shape ``(N, C, H, W)``.
            t (Tensor | int): LongTensor of shape ``(N,)`` or one int,
                0-based steps.
            x_start (Tensor): ``x_0`` of ``x_t``'s shape.

        Returns:
            Tensor: The noise, with ``x_t``'s shape and dtype.
        """
        if not isinstance(t, int):
            self._check_t(t, x_t)
        assert x_start.shape == x_t.shape, (x_start.shape, x_t.shape)
        return ((self._coef(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t -
                 x_start) /
                self._coef(self.sqrt_recipm1_alphas_cumprod, t, x_t))

    def training_target(self, x_start: torch.Tensor, t: torch.Tensor,
                        noise: torch.Tensor) -> torch.Tensor:
        """What the network learns to output for ``x_t = q_sample(...)``.

        Args:
            x_start (Tensor): ``x_0`` of shape ``(N, C, H, W)``.
            t (Tensor): LongTensor of shape ``(N,)``, 0-based steps.
            noise (Tensor): The noise of ``q_sample``.

        Returns:
            Tensor: By ``prediction_type``: ``noise`` ('epsilon'),
            ``x_start`` ('sample') or ``v = sqrt(alpha_bar_t) noise -
            sqrt(1 - alpha_bar_t) x_0``.
        """
        if self.prediction_type == 'epsilon':
            return noise
        if self.prediction_type == 'sample':
            return x_start
        self._check_t(t, x_start)
        return (self._coef(self.sqrt_alphas_cumprod, t, x_start) * noise -
                self._coef(self.sqrt_one_minus_alphas_cumprod, t, x_start) *
                x_start)

    def predict_start_and_eps(
        self,
        model_output: torch.Tensor,
        x_t: torch.Tensor,
        t: Union[int, torch.Tensor],
        *,
        clip_bound: Optional[float] = None
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Interpret a network output once: the predicted ``x_0`` and noise.

        As improved-diffusion's ``p_mean_variance``: the output is read by
        ``prediction_type``; with ``clip_bound`` the ``x_0`` is clipped
        to ``[-c, c]`` and the noise re-derived from it, so the two stay
        consistent.

        Args:
            model_output (Tensor): Network output of ``x_t``'s shape.
            x_t (Tensor): Shape ``(N, C, H, W)``.
            t (int | Tensor): The 0-based step, one int or a LongTensor
                ``(N,)``.
            clip_bound (float, optional): The bound ``c``; None does not
                clip.

        Returns:
            tuple[Tensor, Tensor]: ``x_0`` and ``eps``, each with ``x_t``'s
            shape and dtype.
        """
        x0 = self.predict_start(model_output, x_t, t, clip_bound=clip_bound)
        if self.prediction_type == 'epsilon' and clip_bound is None:
            return x0, model_output.to(x_t.dtype)
        return x0, self.predict_eps_from_xstart(x_t, t, x0)

    def predict_start(self,
                      model_output: torch.Tensor,
                      x_t: torch.Tensor,
                      t: Union[int, torch.Tensor],
                      *,
                      clip_bound: Optional[float] = None) -> torch.Tensor:
        """The ``x_0`` of a network output, read by ``prediction_type``
        (the ``x_0`` half of :meth:`predict_start_and_eps`, without
        deriving the noise), clipped to ``[-c, c]`` with ``clip_bound``.
        """
        out = model_output.to(x_t.dtype)
        if self.prediction_type == 'epsilon':
            x0 = self.predict_xstart_from_eps(x_t, t, out)
        elif self.prediction_type == 'sample':
            x0 = out
        else:  # v: x_0 = sqrt(alpha_bar) x_t - sqrt(1 - alpha_bar) v
            x0 = (
                self._coef(self.sqrt_alphas_cumprod, t, x_t) * x_t -
                self._coef(self.sqrt_one_minus_alphas_cumprod, t, x_t) * out)
        if clip_bound is not None:
            x0 = x0.clamp(-clip_bound, clip_bound)
        return x0

    # ------------------------------------------------------------------
    # Reverse process
    # ------------------------------------------------------------------
    def sampling_options(self,
                         options: Mapping[str, Any],
                         prefix: str = '') -> SamplingOptions:
        """The sampling keys of ``options`` checked for this diffusion's T
        (:func:`~.sampling_options.sampling_options`, the one check, run
        on the host before any work).

        Args:
            options (Mapping): For instance a ``test_cfg``; missing keys
                take :data:`~.defaults.SAMPLING`, other keys are ignored.
            prefix (str): Put before the option names in the messages,
                e.g. ``'test_cfg.'``.

        Returns:
            SamplingOptions: With the number of steps K and the steps the
            sampler visits.
        """
        return sampling_options(options, self.num_timesteps, prefix)

    def timesteps(self,
                  num_steps: int,
                  start_step: Optional[int] = None) -> torch.Tensor:
        """Descending 0-based steps of a ``num_steps``-step sampler
        (:func:`~.sampling_options.sampler_timesteps`): ``K = 1`` gives
        ``[T' - 1]`` and ``K = T'`` gives ``T' - 1, ..., 0``. ``T'`` is
        ``start_step`` (a truncated reverse process) or ``T``.

        Args:
            num_steps (int): ``K`` with ``1 <= K <= T'``.
            start_step (int, optional): ``T'`` with ``1 <= T' <= T``;
                None means ``T``.

        Returns:
            Tensor: LongTensor of shape ``(K,)``, strictly decreasing.
        """
        options = self.sampling_options(
            dict(sampler='ddim', num_steps=num_steps, start_step=start_step))
        return torch.tensor(options.steps, dtype=torch.long)

    @torch.no_grad()
    def sample(
            self,
            model_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
            shape: Sequence[int],
            *,
            sampler: str = SAMPLING['sampler'],
            num_steps: Optional[int] = SAMPLING['num_steps'],
            eta: float = SAMPLING['eta'],
            generator: Optional[torch.Generator] = None,
            noise: Optional[torch.Tensor] = None,
            device: Optional[torch.device] = None,
            dtype: torch.dtype = torch.float32,
            clip_bound: Optional[float] = None,
            start_step: Optional[int] = SAMPLING['start_step']
    ) -> torch.Tensor:
        """Run the reverse process from ``x_T`` to ``x_0`` (Algorithm 2).

        The loop calls ``model_fn`` once per step and hands its output to
        the sampler's step (:mod:`~mmseg_resensemble.diffusion.samplers`),
        which interprets it by ``prediction_type`` and clips it once. The
        steps are Python ints and the schedule is gathered on the device:
        the loop never copies from the device to the host.

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

        Defaults are the paper's Algorithm 2 (:data:`~.defaults.SAMPLING`).

        Args:
            model_fn (Callable): ``model_fn(x_t, t)`` returns the network's
                output (of ``prediction_type``) of ``x_t``'s shape; ``t`` is
                a LongTensor ``(N,)`` filled with the current 0-based step.
            shape (Sequence[int]): ``(N, C, H, W)``.
            sampler (str): A key of :data:`~.samplers.SAMPLERS`:
                ``'ddpm'`` or ``'ddim'``.
            num_steps (int, optional): Number of steps ``K``; None means all
                ``T``. ``'ddpm'`` only supports ``T``.
            eta (float): DDIM stochasticity in [0, 1]; ignored by
                ``'ddpm'``.
            generator (torch.Generator, optional): Source of randomness.
            noise (Tensor, optional): ``x_T`` (``x_T'`` with ``start_step``)
                of shape ``shape``; its device and dtype override ``device``
                and ``dtype``. Required with ``start_step``.
            device (torch.device, optional): Target device; CPU if None.
            dtype (torch.dtype): Target dtype. Defaults to float32.
            clip_bound (float, optional): If given, the ``x_0`` predicted
                at each step is clipped to ``[-c, c]`` and ``eps`` re-derived
                from it (improved-diffusion's ``clip_denoised``; with DDPM
                this is the posterior mean ``mu~(x_t, clip(x_0))`` of
                Eq. 7). Few-step DDIM needs it: at large ``t``,
                ``x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) /
                sqrt(alpha_bar_t)`` amplifies the error of ``eps`` by up to
                ``1 / sqrt(alpha_bar_T)``. None (the default) is Algorithm 2
                exactly.
            start_step (int, optional): ``T'``, the 1-based step the reverse
                process starts at (``noise`` is ``x_T'``); None means T.

        Returns:
            Tensor: ``x_0`` of shape ``shape``.
        """
        steps = self.sampling_options(
            dict(
                sampler=sampler,
                num_steps=num_steps,
                start_step=start_step,
                eta=eta)).steps
        if clip_bound is not None and not clip_bound > 0:
            raise ValueError(
                f'clip_bound must be > 0 or None, got {clip_bound!r}')
        impl = SAMPLERS[sampler]
        if start_step is not None and noise is None:
            raise ValueError('start_step needs noise: the sample x_T\' the '
                             'truncated reverse process starts from')
        shape = tuple(int(s) for s in shape)
        if noise is not None:
            if tuple(noise.shape) != shape:
                raise ValueError(f'noise shape {tuple(noise.shape)} != '
                                 f'shape {shape}')
            device, dtype = noise.device, noise.dtype
        device = torch.device('cpu') if device is None else torch.device(
            device)

        def randn() -> torch.Tensor:
            return draw_noise(shape, generator, device, dtype)

        x = randn() if noise is None else noise
        for i, t in enumerate(steps):
            t_prev = steps[i + 1] if i + 1 < len(steps) else -1
            t_batch = torch.full((shape[0], ),
                                 t,
                                 dtype=torch.long,
                                 device=device)
            out = model_fn(x, t_batch)
            if tuple(out.shape) != shape:
                raise ValueError(f'model_fn returned shape '
                                 f'{tuple(out.shape)}, expected {shape}')
            z = randn() if impl.needs_noise(t, t_prev, eta) else None
            x = impl.step(
                self,
                out,
                t,
                t_prev,
                x,
                eta=eta,
                noise=z,
                clip_bound=clip_bound).prev_sample
        return x


def draw_noise(shape: Sequence[int], generator: Optional[torch.Generator],
               device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Standard normal noise of ``shape`` from ``generator``.

    Drawn in float32 on the generator's device (``device`` without one),
    then moved to ``device``/``dtype``, so that a seed gives the same
    values on every device. A draw on the host is copied to the device
    from pinned memory without blocking the host.

    Args:
        shape (Sequence[int]): The shape.
        generator (torch.Generator, optional): The source; the global one
            of ``device`` if None.
        device (torch.device): Target device.
        dtype (torch.dtype): Target dtype.

    Returns:
        Tensor: The noise on ``device``, of ``dtype``.
    """
    device = torch.device(device)
    gen_device = device if generator is None else generator.device
    z = torch.randn(
        tuple(shape),
        generator=generator,
        device=gen_device,
        dtype=torch.float32)
    if z.device != device:
        if device.type == 'cuda' and z.device.type == 'cpu':
            z = z.pin_memory()
        z = z.to(device=device, non_blocking=True)
    return z.to(dtype=dtype)
