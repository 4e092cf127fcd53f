# Copyright (c) mmseg-resensemble contributors. All rights reserved.
from .evaluation import ConfusionCounter, evaluate_learners, format_iou_table

__all__ = ['ConfusionCounter', 'evaluate_learners', 'format_iou_table']
