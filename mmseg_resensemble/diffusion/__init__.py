# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""Network-free Gaussian diffusion (DDPM/DDIM) of ResEnsemble-DDPM."""
from .defaults import DIFFUSION, SAMPLING, TRAINING
from .gaussian_diffusion import (PREDICTION_TYPES, GaussianDiffusion,
                                 check_prediction_type, draw_noise)
from .samplers import (SAMPLERS, DDIMSampler, DDPMSampler, Sampler, StepOutput,
                       check_eta, register_sampler)
from .sampling_options import (SamplingOptions, sampler_timesteps,
                               sampling_options)
from .schedules import BETA_SCHEDULES, get_beta_schedule
from .training_timesteps import TIMESTEP_CHOICES, TrainingTimesteps

__all__ = [
    'GaussianDiffusion', 'get_beta_schedule', 'SAMPLERS', 'BETA_SCHEDULES',
    'PREDICTION_TYPES', 'check_prediction_type', 'draw_noise', 'DIFFUSION',
    'SAMPLING', 'Sampler', 'DDPMSampler', 'DDIMSampler', 'StepOutput',
    'register_sampler', 'TrainingTimesteps', 'TIMESTEP_CHOICES', 'TRAINING',
    'SamplingOptions', 'sampling_options', 'sampler_timesteps', 'check_eta'
]
