# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""Let torch >= 2.6 load the checkpoints that mmengine 0.10 writes, safely.

``torch.load`` defaults to ``weights_only=True`` since torch 2.6. mmengine
0.10.7 stores its ``message_hub`` in every checkpoint: ``HistoryBuffer``
objects holding numpy arrays and numpy scalars. ``HistoryBuffer``'s
``__getstate__`` adds the class's statistics methods, and pickle (protocol
2, torch's) writes ``HistoryBuffer.mean`` as ``getattr(HistoryBuffer,
'mean')``. So ``--resume``, ``load_from`` and ``tools/test.py CONFIG CKPT``
fail with an ``UnpicklingError``.

Instead of switching ``weights_only`` off, this allowlists the numpy and
``HistoryBuffer`` globals those checkpoints hold and, for their
``builtins.getattr``, :func:`history_buffer_method`, which returns only the
four statistics methods of ``HistoryBuffer`` (``min``, ``max``,
``current``, ``mean``) and raises ``UnpicklingError`` for anything else.
The real ``getattr`` stays refused: allowlisting it would let a crafted
file reach any callable, e.g. ``getattr(getattr(getattr, '__self__'),
'eval')`` is ``builtins.eval``.

Checkpoints written after the import need no ``getattr`` at all:
:func:`reduce_history_buffer` (registered with :mod:`copyreg`) pickles a
``HistoryBuffer`` as ``HistoryBuffer(log_history, count_history,
max_length)``, its data only.
"""
import copyreg
from pickle import UnpicklingError
from typing import Any, List, Tuple

import torch
from mmengine.utils import digit_version

#: The statistics methods of ``HistoryBuffer`` that mmengine pickles.
HISTORY_BUFFER_METHODS = ('min', 'max', 'current', 'mean')


def history_buffer_method(obj: Any, name: str) -> Any:
    """``getattr`` for weights-only loads, restricted to ``HistoryBuffer``'s
    statistics methods.

    Allowlisted as ``builtins.getattr``: mmengine 0.10 checkpoints hold
    ``getattr(HistoryBuffer, name)`` for each of
    :data:`HISTORY_BUFFER_METHODS`, and nothing else needs it.

    Args:
        obj: What the checkpoint applies ``getattr`` to.
        name (str): The attribute's name.

    Returns:
        function: ``HistoryBuffer.<name>``.

    Raises:
        UnpicklingError: For any other object or name.
    """
    from mmengine.logging.history_buffer import HistoryBuffer
    if obj is not HistoryBuffer or name not in HISTORY_BUFFER_METHODS:
        raise UnpicklingError(
            f'refusing getattr({obj!r}, {name!r}) in a weights-only load: '
            'mmseg_resensemble allows getattr only for HistoryBuffer.'
            f'{{{", ".join(HISTORY_BUFFER_METHODS)}}}')
    return getattr(HistoryBuffer, name)


def reduce_history_buffer(buffer: Any) -> Tuple[type, tuple]:
    """Pickle a ``HistoryBuffer`` as its data: logs, counts, max length.

    Unlike mmengine's ``__getstate__``, this stores no functions, so the
    checkpoint needs no ``getattr`` to load.
    """
    log_history, count_history = buffer.data
    return type(buffer), (log_history, count_history, buffer.max_length)


def mmengine_safe_globals() -> List[object]:
    """The globals found in mmengine 0.10 checkpoints, beside tensors.

    ``builtins.getattr`` is mapped to :func:`history_buffer_method`.
    """
    import numpy as np
    from mmengine.logging.history_buffer import HistoryBuffer
    try:  # numpy >= 2
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar
    found = [HistoryBuffer, np.ndarray, np.dtype, _reconstruct, scalar]
    if digit_version(torch.__version__) >= digit_version('2.6.0'):
        # (object, name) pairs are accepted since torch 2.6
        found.append((history_buffer_method, 'builtins.getattr'))
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
    """Allowlist mmengine's checkpoint globals for ``weights_only`` loads,
    and pickle ``HistoryBuffer`` as data from now on.

    The allowlist is a no-op on torch < 2.4, which has none (and loads with
    ``weights_only=False`` by default before 2.6).
    """
    from mmengine.logging.history_buffer import HistoryBuffer
    copyreg.pickle(HistoryBuffer, reduce_history_buffer)
    add_safe_globals = getattr(torch.serialization, 'add_safe_globals', None)
    if add_safe_globals is not None:
        add_safe_globals(mmengine_safe_globals())
