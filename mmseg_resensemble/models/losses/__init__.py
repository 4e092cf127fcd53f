# Copyright (c) mmseg-resensemble contributors. All rights reserved.
from .diffusion_target_loss import DiffusionTargetLoss

__all__ = ['DiffusionTargetLoss']
