# Copyright (c) mmseg-resensemble contributors. All rights reserved.
from .dilated_res_denoiser import BLOCK_TYPES, DilatedResDenoiser
from .separable_timestep_block import SeparableTimestepBlock
from .timestep_res_block import TimestepResBlock

__all__ = [
    'BLOCK_TYPES', 'DilatedResDenoiser', 'SeparableTimestepBlock',
    'TimestepResBlock'
]
