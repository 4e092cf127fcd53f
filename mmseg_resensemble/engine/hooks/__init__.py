# Copyright (c) mmseg-resensemble contributors. All rights reserved.
from .e2e_cache_hook import E2ECacheHook

__all__ = ['E2ECacheHook']
