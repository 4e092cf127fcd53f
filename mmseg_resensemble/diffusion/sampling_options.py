# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""The options of the reverse process: one meaning and one check each.

``test_cfg`` of the segmentor, the head, :meth:`GaussianDiffusion.sample`
and the tools only pass these options on; :func:`sampling_options` is the
one place that fills in the defaults (:data:`~.defaults.SAMPLING`), checks
every value and resolves ``clip_denoised=None``.

=================  =======================================================
key                meaning
=================  =======================================================
``sampler``        a key of :data:`~.samplers.SAMPLERS`: 'ddpm'
                   (Algorithm 2, every step) or 'ddim'
``num_steps``      K, an integer in [1, T']; None: every step (T')
``eta``            DDIM's stochasticity in [0, 1] (0: deterministic; 1
                   over consecutive steps: DDPM); 'ddpm' ignores it
``clip_denoised``  clip the x0 predicted at each step to the target's
                   range: True, False, or None: the sampler's
                   ``clips_by_default``, True for 'ddim' (few steps need
                   it), False for 'ddpm' (Algorithm 2 exactly)
``start_step``     T', the 1-based step the reverse process starts at
                   (truncated diffusion); None: T, from pure noise
``num_samples``    samples per image, an integer >= 1
``seed``           an int (the same samples on the same kind of device) or
                   None (drawn from the global generator)
=================  =======================================================
"""
from typing import Any, List, Mapping, NamedTuple, Optional, Tuple

import numpy as np

from .defaults import SAMPLING
from .samplers import SAMPLERS, check_eta

__all__ = ['SamplingOptions', 'sampling_options', 'sampler_timesteps']


class SamplingOptions(NamedTuple):
    """Sampling options read and checked (see :func:`sampling_options`).

    Attributes:
        sampler (str): The sampler's name.
        num_steps (int): K, the number of steps (resolved from None).
        eta (float): DDIM's stochasticity.
        clip_denoised (bool): Whether each step's x0 is clipped (resolved
            from None).
        start_step (int, optional): T' as given (None: T).
        num_samples (int): Samples per image.
        seed (int, optional): The seed of the sampling noise.
        steps (tuple[int]): The 0-based steps the sampler visits,
            descending (:func:`sampler_timesteps`).
    """
    sampler: str
    num_steps: int
    eta: float
    clip_denoised: bool
    start_step: Optional[int]
    num_samples: int
    seed: Optional[int]
    steps: Tuple[int, ...]


def _is_int(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer))


def sampler_timesteps(num_steps: int, start_step: int) -> List[int]:
    """Descending 0-based steps of a ``num_steps``-step sampler.

    Trailing even spacing ``t_k = round(k * T' / K) - 1`` for
    ``k = 1, ..., K`` (half rounded up), so ``K = 1`` gives ``[T' - 1]`` and
    ``K = T'`` gives ``T' - 1, ..., 0``.

    Args:
        num_steps (int): ``K`` with ``1 <= K <= T'``.
        start_step (int): ``T'``.

    Returns:
        list[int]: ``K`` strictly decreasing steps.
    """
    T = int(start_step)
    if not _is_int(num_steps) or not 1 <= num_steps <= T:
        raise ValueError(f'num_steps must be an integer in [1, {T}], got '
                         f'{num_steps!r}')
    K = int(num_steps)
    return [(2 * k * T + K) // (2 * K) - 1 for k in range(K, 0, -1)]


def sampling_options(options: Mapping[str, Any],
                     num_timesteps: int,
                     prefix: str = '') -> SamplingOptions:
    """Read the sampling keys of ``options`` (missing ones from
    :data:`~.defaults.SAMPLING`; other keys are ignored), check each and
    resolve the defaults that depend on others.

    Args:
        options (Mapping): For instance a ``test_cfg``.
        num_timesteps (int): T of the diffusion.
        prefix (str): Put before the option names in the messages, e.g.
            ``'test_cfg.'``.

    Returns:
        SamplingOptions: The checked options.

    Raises:
        ValueError: Naming the bad option and what it must be.
    """
    cfg = {k: options.get(k, v) for k, v in SAMPLING.items()}
    sampler = cfg['sampler']
    if not isinstance(sampler, str) or sampler not in SAMPLERS:
        raise ValueError(f'{prefix}sampler={sampler!r} is not one of '
                         f'{list(SAMPLERS)}')
    T = int(num_timesteps)
    start_step = cfg['start_step']
    if start_step is not None and (not _is_int(start_step)
                                   or not 1 <= start_step <= T):
        raise ValueError(f'{prefix}start_step must be None or an integer in '
                         f'[1, {T}], got {start_step!r}')
    start = T if start_step is None else int(start_step)
    num_steps = cfg['num_steps']
    K = start if num_steps is None else num_steps
    if not _is_int(K) or not 1 <= K <= start:
        raise ValueError(f'{prefix}num_steps must be None or an integer in '
                         f'[1, {start}], got {num_steps!r}')
    if SAMPLERS[sampler].all_steps_only and K != start:
        raise ValueError(
            f'{prefix}sampler={sampler!r} runs all {start} steps '
            f'({prefix}num_steps=None), got {prefix}num_steps={K}; use '
            f"{prefix}sampler='ddim' for fewer")
    eta = check_eta(cfg['eta'], prefix)
    clip = cfg['clip_denoised']
    if clip is not None and not isinstance(clip, bool):
        raise ValueError(f'{prefix}clip_denoised must be a bool or None, got '
                         f'{clip!r}')
    num_samples = cfg['num_samples']
    if not _is_int(num_samples) or num_samples < 1:
        raise ValueError(f'{prefix}num_samples must be an int >= 1, got '
                         f'{num_samples!r}')
    seed = cfg['seed']
    if seed is not None and not _is_int(seed):
        raise ValueError(f'{prefix}seed must be an int or None, got '
                         f'{seed!r}')
    return SamplingOptions(
        sampler=sampler,
        num_steps=int(K),
        eta=eta,
        clip_denoised=(SAMPLERS[sampler].clips_by_default
                       if clip is None else clip),
        start_step=start_step if start_step is None else int(start_step),
        num_samples=int(num_samples),
        seed=seed if seed is None else int(seed),
        steps=tuple(sampler_timesteps(K, start)))
