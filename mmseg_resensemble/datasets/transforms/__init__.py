# Copyright (c) mmseg-resensemble contributors. All rights reserved.
from .checks import CheckImageAndLabel
from .formatting import PackResEnsembleInputs

__all__ = ['CheckImageAndLabel', 'PackResEnsembleInputs']
