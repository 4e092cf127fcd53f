# Copyright (c) mmseg-resensemble contributors. All rights reserved.
from .e2e_conditioned_head import E2EConditionedHead
from .e2e_refiner_head import E2ERefinerHead
from .residual_diffusion_head import TEST_CFG_DEFAULTS, ResidualDiffusionHead

__all__ = [
    'E2EConditionedHead', 'E2ERefinerHead', 'ResidualDiffusionHead',
    'TEST_CFG_DEFAULTS'
]
