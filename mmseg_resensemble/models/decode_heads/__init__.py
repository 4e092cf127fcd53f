# Copyright (c) mmseg-resensemble contributors. All rights reserved.
from .residual_diffusion_head import ResidualDiffusionHead

__all__ = ['ResidualDiffusionHead']
