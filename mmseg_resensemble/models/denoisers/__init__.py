# Copyright (c) mmseg-resensemble contributors. All rights reserved.
from .dilated_res_denoiser import DilatedResDenoiser
from .timestep_res_block import TimestepResBlock

__all__ = ['DilatedResDenoiser', 'TimestepResBlock']
