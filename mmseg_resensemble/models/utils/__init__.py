# Copyright (c) mmseg-resensemble contributors. All rights reserved.
from .mask_encoding import analog_to_probs, labels_to_onehot, probs_to_analog
from .parallel_group_norm import ParallelGroupNorm
from .timestep_embedding import timestep_embedding

__all__ = [
    'analog_to_probs', 'labels_to_onehot', 'ParallelGroupNorm',
    'probs_to_analog', 'timestep_embedding'
]
