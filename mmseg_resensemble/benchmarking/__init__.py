# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""Helpers of the demo and the benchmark tools: configure, train (or reuse)
and load runs, score both learners class by class, draw figures and
side-by-side pictures. Inference itself is MMSeg's (``mmseg.apis``)."""
from .evaluation import ConfusionCounter, evaluate_learners, format_iou_table
from .runs import (final_checkpoint, load_resensemble, load_run_config,
                   train_or_reuse)
from .visualization import colourise, side_by_side

__all__ = [
    'ConfusionCounter', 'evaluate_learners', 'format_iou_table', 'colourise',
    'side_by_side', 'final_checkpoint', 'load_resensemble', 'load_run_config',
    'train_or_reuse'
]
