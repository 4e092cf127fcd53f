# Copyright (c) mmseg-resensemble contributors. All rights reserved.
from .checkpoint_compat import (mmengine_safe_globals,
                                register_checkpoint_safe_globals)
from .dist import adapt_launcher_cfg

__all__ = [
    'adapt_launcher_cfg', 'mmengine_safe_globals',
    'register_checkpoint_safe_globals'
]
