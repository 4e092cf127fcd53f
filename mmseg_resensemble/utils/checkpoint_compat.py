# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""Let torch >= 2.6 load the checkpoints that mmengine 0.10 writes.

``torch.load`` defaults to ``weights_only=True`` since torch 2.6. mmengine
0.10.7 stores its ``message_hub`` in every checkpoint (``HistoryBuffer``
objects holding numpy arrays, numpy scalars and dtypes), so ``--resume``,
``load_from`` and ``tools/test.py CONFIG CKPT`` fail with an
``UnpicklingError``. Instead of switching ``weights_only`` off, this
allowlists exactly the types mmengine writes.
"""
from typing import List

import numpy as np
import torch


def _numpy_globals() -> List[object]:
    """numpy's reconstructors, its dtype classes and scalar types."""
    try:  # numpy >= 2
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar
    found = [_reconstruct, scalar, np.ndarray, np.dtype]
    # dtype classes (numpy >= 1.25 pickles np.dtype('float64') through
    # numpy.dtypes.Float64DType)
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        found += [
            getattr(dtypes, name) for name in dir(dtypes)
            if name.endswith('DType')
        ]
    # numpy scalar types (e.g. np.float64 values logged in the message hub)
    found += sorted(
        {t
         for ts in np.sctypes.values()
         for t in ts} if hasattr(np, 'sctypes') else set(
             np.core.numerictypes.sctypeDict.values()),
        key=str)
    return found


def mmengine_safe_globals() -> List[object]:
    """The globals found in mmengine 0.10 checkpoints, beside tensors."""
    from mmengine.logging.history_buffer import HistoryBuffer
    return [HistoryBuffer] + _numpy_globals()


def register_checkpoint_safe_globals() -> None:
    """Allowlist mmengine's checkpoint types for ``weights_only`` loading.

    A no-op on torch < 2.4, which has no allowlist (and loads with
    ``weights_only=False`` by default before 2.6).
    """
    add_safe_globals = getattr(torch.serialization, 'add_safe_globals', None)
    if add_safe_globals is not None:
        add_safe_globals(mmengine_safe_globals())
