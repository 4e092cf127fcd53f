# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""ResEnsemble-DDPM for MMSegmentation 1.x.

Importing the package registers its modules in MMSeg's registries (use
``custom_imports = dict(imports=['mmseg_resensemble'],
allow_failed_imports=False)`` in a config) and lets torch >= 2.6 load the
checkpoints mmengine writes.
"""
from .utils import register_checkpoint_safe_globals
from .version import __version__

register_checkpoint_safe_globals()

from . import e2e_cache  # noqa: E402,F401
from . import models  # noqa: E402,F401
from . import datasets, diffusion, engine, evaluation  # noqa: E402,F401

__all__ = ['__version__']
