# Copyright (c) mmseg-resensemble contributors. All rights reserved.
from mmengine.registry import init_default_scope

import mmseg_resensemble  # noqa: F401

# as MMSeg's configs do with default_scope = 'mmseg'
init_default_scope('mmseg')
