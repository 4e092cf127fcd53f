# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""Network-free Gaussian diffusion (DDPM/DDIM) of ResEnsemble-DDPM."""
from .gaussian_diffusion import (PREDICTION_TYPES, SAMPLERS, GaussianDiffusion,
                                 check_prediction_type)
from .schedules import BETA_SCHEDULES, get_beta_schedule

__all__ = [
    'GaussianDiffusion', 'get_beta_schedule', 'SAMPLERS', 'BETA_SCHEDULES',
    'PREDICTION_TYPES', 'check_prediction_type'
]
