# Copyright (c) mmseg-resensemble contributors. All rights reserved.
from .checkpoint_checks import (check_checkpoint_covers_model,
                                find_resumable_checkpoint, read_checkpoint)
from .checkpoint_compat import (mmengine_safe_globals,
                                register_checkpoint_safe_globals)
from .dist import prepare_distributed, shutdown_distributed
from .mobilenetv2_converter import convert_mobilenetv2
from .tool_config import add_config_args, load_tool_config

__all__ = [
    'convert_mobilenetv2', 'prepare_distributed', 'mmengine_safe_globals',
    'register_checkpoint_safe_globals', 'shutdown_distributed',
    'read_checkpoint', 'check_checkpoint_covers_model',
    'find_resumable_checkpoint', 'add_config_args', 'load_tool_config'
]
