# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""Noise (beta) schedules of the Gaussian diffusion process.

All schedules are computed in float64 with NumPy. Index ``i`` of a returned
array is the paper's timestep ``t = i + 1``.
"""
import math

import numpy as np

from .defaults import DIFFUSION

BETA_SCHEDULES = ('linear', 'cosine')


def _check_num_timesteps(num_timesteps: int) -> None:
    if (isinstance(num_timesteps, bool)
            or not isinstance(num_timesteps,
                              (int, np.integer)) or num_timesteps < 1):
        raise ValueError('num_timesteps must be an integer >= 1, got '
                         f'{num_timesteps!r}')


def _check_betas(beta_start: float, beta_end: float) -> None:
    if not 0.0 < beta_start < 1.0:
        raise ValueError(
            f'beta_start must lie in (0, 1), got beta_start={beta_start!r}')
    if not 0.0 < beta_end < 1.0:
        raise ValueError(
            f'beta_end must lie in (0, 1), got beta_end={beta_end!r}')
    if beta_start > beta_end:
        raise ValueError('beta_start must be <= beta_end, got '
                         f'beta_start={beta_start!r} > beta_end={beta_end!r}')


def linear_beta_schedule(
        num_timesteps: int,
        beta_start: float = DIFFUSION['beta_start'],
        beta_end: float = DIFFUSION['beta_end']) -> np.ndarray:
    """Linear schedule of the ResEnsemble-DDPM paper (Eq. 24).

    ``beta_t = (beta_start * (T - t) + beta_end * (t - 1)) / (T - 1)`` for
    ``t = 1, ..., T``, i.e. ``beta_1 = beta_start`` and ``beta_T = beta_end``
    (Ho et al. 2020). For ``T = 1`` the schedule is ``[beta_start]``.

    Args:
        num_timesteps (int): Number of diffusion steps ``T``.
        beta_start (float): ``beta_1``. Defaults to the paper's 1e-4.
        beta_end (float): ``beta_T``. Defaults to the paper's 2e-2.

    Returns:
        np.ndarray: float64 array of shape ``(T,)``.
    """
    _check_num_timesteps(num_timesteps)
    _check_betas(beta_start, beta_end)
    T = int(num_timesteps)
    if T == 1:
        return np.array([beta_start], dtype=np.float64)
    t = np.arange(1, T + 1, dtype=np.float64)
    # Eq. 24: linear interpolation between beta_1 and beta_T.
    return (beta_start * (T - t) + beta_end * (t - 1)) / (T - 1)


def cosine_beta_schedule(num_timesteps: int,
                         s: float = 0.008,
                         max_beta: float = 0.999) -> np.ndarray:
    """Cosine schedule of Nichol & Dhariwal (2021), Eq. 17.

    ``alpha_bar(t) = cos^2(((t / T) + s) / (1 + s) * pi / 2)`` and
    ``beta_t = min(1 - alpha_bar(t) / alpha_bar(t - 1), max_beta)``.

    Args:
        num_timesteps (int): Number of diffusion steps ``T``.
        s (float): Small offset that keeps ``beta_1`` away from 0.
            Defaults to 0.008.
        max_beta (float): Upper clip of ``beta_t``. Defaults to 0.999.

    Returns:
        np.ndarray: float64 array of shape ``(T,)``.
    """
    _check_num_timesteps(num_timesteps)
    T = int(num_timesteps)

    def alpha_bar(t: float) -> float:
        return math.cos((t / T + s) / (1 + s) * math.pi / 2)**2

    betas = [
        min(1.0 - alpha_bar(t) / alpha_bar(t - 1), max_beta)
        for t in range(1, T + 1)
    ]
    return np.array(betas, dtype=np.float64)


def get_beta_schedule(name: str,
                      num_timesteps: int,
                      beta_start: float = DIFFUSION['beta_start'],
                      beta_end: float = DIFFUSION['beta_end']) -> np.ndarray:
    """Build a beta schedule by name.

    Args:
        name (str): One of ``BETA_SCHEDULES``: ``'linear'`` (paper's Eq. 24)
            or ``'cosine'`` (Nichol & Dhariwal 2021).
        num_timesteps (int): Number of diffusion steps ``T`` (>= 1).
        beta_start (float): ``beta_1`` of the linear schedule. Defaults to
            1e-4. Validated for every schedule (``0 < beta_start <=
            beta_end < 1``) but only used by ``'linear'``.
        beta_end (float): ``beta_T`` of the linear schedule. Defaults to
            2e-2.

    Returns:
        np.ndarray: float64 array of shape ``(T,)``; index ``i`` holds the
        paper's ``beta_{i+1}``.

    Raises:
        ValueError: If ``name`` is unknown or an argument is out of range.
    """
    _check_num_timesteps(num_timesteps)
    _check_betas(beta_start, beta_end)
    if name == 'linear':
        return linear_beta_schedule(num_timesteps, beta_start, beta_end)
    if name == 'cosine':
        return cosine_beta_schedule(num_timesteps)
    raise ValueError(f'Unknown beta schedule {name!r}; valid choices are '
                     f'{BETA_SCHEDULES}')
