# Copyright (c) mmseg-resensemble contributors. All rights reserved.
from .e2e_refiner_head import E2ERefinerHead
from .residual_diffusion_head import ResidualDiffusionHead

__all__ = ['E2ERefinerHead', 'ResidualDiffusionHead']
