# Copyright (c) mmseg-resensemble contributors. All rights reserved.
from .formatting import PackResEnsembleInputs
from .loading import LoadE2ECache

__all__ = ['LoadE2ECache', 'PackResEnsembleInputs']
