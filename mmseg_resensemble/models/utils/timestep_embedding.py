# Copyright (c) mmseg-resensemble contributors. All rights reserved.
import math

import torch
from torch import Tensor


def timestep_embedding(timesteps: Tensor,
                       dim: int,
                       max_period: float = 10000.) -> Tensor:
    """Sinusoidal embedding of diffusion steps (Vaswani et al. 2017).

    Args:
        timesteps (Tensor): 0-based steps of shape (N,).
        dim (int): Embedding size.
        max_period (float): Lowest frequency is 1 / max_period.

    Returns:
        Tensor: Embedding of shape (N, dim), float32.
    """
    assert timesteps.dim() == 1, f'expected (N,), got {timesteps.shape}'
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) *
        torch.arange(half, dtype=torch.float32, device=timesteps.device) /
        half)
    args = timesteps.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb
