# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""Which steps training draws: the one place that reads ``timesteps``.

Algorithm 1 draws t uniformly from 1..T. A sampler that takes few steps
only ever shows the network the inputs of its own steps (one DDIM step
from pure noise: t = T alone), so training may draw from those steps, or
from a range of steps, instead.
"""
from typing import Dict, Optional, Sequence, Union

import numpy as np
import torch

#: the named choices of ``timesteps`` (a pair (lo, hi) is a range)
TIMESTEP_CHOICES = ('uniform', 'sampler')

TimestepSpec = Union[str, Sequence[int]]


class TrainingTimesteps:
    """The distribution of the training step t (0-based inside).

    Args:
        spec (str | Sequence[int]): 'uniform': t ~ U{1..T} (Algorithm 1,
            the paper); 'sampler': uniform over the steps the sampler
            visits (``sampler_steps``); or a pair ``(lo, hi)`` of 1-based
            steps, 1 <= lo <= hi <= T: t ~ U{lo..hi}.
        num_timesteps (int): T.
        sampler_steps (Sequence[int], optional): The sampler's 0-based
            steps (:meth:`GaussianDiffusion.timesteps`); required by
            'sampler'.
        prefix (str): Prefix of the key in error messages.

    Raises:
        ValueError: Naming the bad ``spec``.
    """

    def __init__(self,
                 spec: TimestepSpec,
                 num_timesteps: int,
                 sampler_steps: Optional[Sequence[int]] = None,
                 prefix: str = '') -> None:
        T = int(num_timesteps)
        if isinstance(spec, str):
            if spec not in TIMESTEP_CHOICES:
                raise ValueError(
                    f'{prefix}timesteps must be one of {TIMESTEP_CHOICES} or '
                    f'a pair (lo, hi) of steps in [1, {T}], got {spec!r}')
            steps, lo, hi = None, 0, T - 1
            if spec == 'sampler':
                if not sampler_steps:
                    raise ValueError(f"{prefix}timesteps='sampler' needs the "
                                     "sampler's steps")
                steps = sorted(int(t) for t in sampler_steps)
                if steps[0] < 0 or steps[-1] >= T:
                    raise ValueError(f'sampler steps must lie in [0, {T - 1}]'
                                     f', got {steps}')
        else:
            pair = list(spec) if isinstance(spec, (list, tuple)) else None
            if (pair is None or len(pair) != 2 or any(
                    isinstance(v, bool)
                    or not isinstance(v, (int, np.integer))
                    for v in pair) or not 1 <= pair[0] <= pair[1] <= T):
                raise ValueError(
                    f'{prefix}timesteps must be one of {TIMESTEP_CHOICES} or '
                    f'a pair (lo, hi) of steps with 1 <= lo <= hi <= {T}, '
                    f'got {spec!r}')
            steps = None
            lo, hi = int(pair[0]) - 1, int(pair[1]) - 1
        self.spec = spec
        self.num_timesteps = T
        self.steps = steps
        self.low, self.high = lo, hi
        # the steps as a tensor, made once per device
        self._steps_on: Dict[torch.device, torch.Tensor] = {}

    def __repr__(self) -> str:
        return (f'{type(self).__name__}({self.spec!r}, '
                f'num_timesteps={self.num_timesteps})')

    def draw(self,
             batch_size: int,
             device: torch.device,
             generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """One 0-based step per sample.

        Args:
            batch_size (int): N.
            device (torch.device): Where the steps go.
            generator (torch.Generator, optional): On ``device``.

        Returns:
            Tensor: LongTensor (N,).
        """
        if self.steps is None:
            return torch.randint(
                self.low,
                self.high + 1, (batch_size, ),
                device=device,
                generator=generator)
        index = torch.randint(
            0,
            len(self.steps), (batch_size, ),
            device=device,
            generator=generator)
        device = torch.device(device)
        if device not in self._steps_on:
            self._steps_on[device] = torch.tensor(self.steps, device=device)
        return self._steps_on[device][index]
