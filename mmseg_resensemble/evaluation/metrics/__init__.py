# Copyright (c) mmseg-resensemble contributors. All rights reserved.
from .resensemble_iou_metric import ResEnsembleIoUMetric

__all__ = ['ResEnsembleIoUMetric']
