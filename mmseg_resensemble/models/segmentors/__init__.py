# Copyright (c) mmseg-resensemble contributors. All rights reserved.
from .resensemble_segmentor import ResEnsembleSegmentor

__all__ = ['ResEnsembleSegmentor']
