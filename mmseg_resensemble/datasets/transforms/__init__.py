# Copyright (c) mmseg-resensemble contributors. All rights reserved.
from .checks import CheckImageAndLabel
from .formatting import PackResEnsembleInputs
from .loading import LoadE2ECache

__all__ = ['CheckImageAndLabel', 'LoadE2ECache', 'PackResEnsembleInputs']
