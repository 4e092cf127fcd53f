# Copyright (c) mmseg-resensemble contributors. All rights reserved.
from .noise_prediction_loss import NoisePredictionLoss

__all__ = ['NoisePredictionLoss']
