# Copyright (c) mmseg-resensemble contributors. All rights reserved.
from .metrics import ResEnsembleIoUMetric
from .uncertainty import (CalibrationCounter, ErrorDetectionCounter, auroc,
                          average_precision, probs_from_logits)

__all__ = [
    'ResEnsembleIoUMetric', 'CalibrationCounter', 'ErrorDetectionCounter',
    'auroc', 'average_precision', 'probs_from_logits'
]
