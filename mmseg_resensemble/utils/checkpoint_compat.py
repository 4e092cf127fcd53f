# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""Let torch >= 2.6 load the checkpoints that mmengine 0.10 writes.

``torch.load`` defaults to ``weights_only=True`` since torch 2.6. mmengine
0.10.7 stores its ``message_hub`` in every checkpoint: ``HistoryBuffer``
objects holding numpy arrays and numpy scalars, and the buffers' bound
statistics methods, pickled as ``getattr(buffer, 'mean')``. So
``--resume``, ``load_from`` and ``tools/test.py CONFIG CKPT`` fail with an
``UnpicklingError``. Instead of switching ``weights_only`` off, this
allowlists exactly those globals. ``getattr`` is safe there: the
weights-only unpickler still refuses to call anything that is not
allowlisted, so it can only fetch attributes of allowlisted objects.
"""
from typing import List

import torch


def mmengine_safe_globals() -> List[object]:
    """The globals found in mmengine 0.10 checkpoints, beside tensors."""
    import numpy as np
    from mmengine.logging.history_buffer import HistoryBuffer
    try:  # numpy >= 2
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar
    found = [
        HistoryBuffer, getattr, np.ndarray, np.dtype, _reconstruct, scalar
    ]
    # numpy >= 1.25 may pickle a dtype through its class, e.g.
    # numpy.dtypes.Float64DType, for the dtypes mmengine logs
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        found += [
            type(np.dtype(t))
            for t in (np.float64, np.float32, np.int64, np.int32, np.bool_)
        ]
    return found


def register_checkpoint_safe_globals() -> None:
    """Allowlist mmengine's checkpoint globals for ``weights_only`` loads.

    A no-op on torch < 2.4, which has no allowlist (and loads with
    ``weights_only=False`` by default before 2.6).
    """
    add_safe_globals = getattr(torch.serialization, 'add_safe_globals', None)
    if add_safe_globals is not None:
        add_safe_globals(mmengine_safe_globals())
