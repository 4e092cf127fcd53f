# Copyright (c) mmseg-resensemble contributors. All rights reserved.
from .camvid import CamVidDataset
from .e2e_cache_store import E2ECacheError, E2ECacheStore
from .synthetic_shapes import SyntheticShapesDataset, generate_shapes_dataset
from .transforms import *  # noqa: F401,F403

__all__ = [
    'CamVidDataset', 'E2ECacheError', 'E2ECacheStore',
    'SyntheticShapesDataset', 'generate_shapes_dataset'
]
