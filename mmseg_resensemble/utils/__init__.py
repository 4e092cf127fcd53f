# Copyright (c) mmseg-resensemble contributors. All rights reserved.
from .checkpoint_compat import (mmengine_safe_globals,
                                register_checkpoint_safe_globals)
from .dist import prepare_distributed

__all__ = [
    'prepare_distributed', 'mmengine_safe_globals',
    'register_checkpoint_safe_globals'
]
