# Copyright (c) mmseg-resensemble contributors. All rights reserved.
from .camvid import CamVidDataset
from .synthetic_shapes import SyntheticShapesDataset, generate_shapes_dataset
from .transforms import *  # noqa: F401,F403

__all__ = [
    'CamVidDataset', 'SyntheticShapesDataset', 'generate_shapes_dataset'
]
