# Copyright (c) mmseg-resensemble contributors. All rights reserved.
from .evaluation import ConfusionCounter, evaluate_learners, format_iou_table
from .runs import (final_checkpoint, load_resensemble, load_run_config,
                   train_or_reuse)
from .visualization import colourise, side_by_side

__all__ = [
    'ConfusionCounter', 'evaluate_learners', 'format_iou_table', 'colourise',
    'side_by_side', 'final_checkpoint', 'load_resensemble', 'load_run_config',
    'train_or_reuse'
]
