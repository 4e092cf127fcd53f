# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""The private parts of mmengine this package relies on, in one place.

Written against **mmengine 0.10.7** (the release MMSeg 1.2.2 runs on).
mmengine has no public hook point for two things the project needs:

* **exact resume** (:class:`~.hooks.RandomStateHook`): whether a run
  resumes (``--resume``) or only loads weights is held in
  ``Runner._resume``; and the random states must be restored *after*
  :class:`IterBasedTrainLoop` has skipped the batches already trained on
  and *before* it fetches the next one, a point no hook marks, so the
  loop's ``dataloader_iterator`` is wrapped;
* **atomic checkpoint writes** (:class:`~.hooks.AtomicCheckpointHook`):
  :class:`CheckpointHook` deletes the outdated checkpoint before it writes
  the new one inside its ``_save_checkpoint_with_step``, which the hook
  overrides, reading the hook's state named in
  :data:`CHECKPOINT_HOOK_STATE`.

Every access goes through this module, and
``tests/test_engine/test_mmengine_internals.py`` fails when one of these
attributes changes name, meaning or signature in an installed mmengine.
"""
from typing import Any, Callable, Iterator

__all__ = [
    'MMENGINE_VERSION', 'is_resuming', 'wrap_train_iterator',
    'unwrap_train_iterator', 'SAVE_CHECKPOINT_WITH_STEP',
    'CHECKPOINT_HOOK_STATE'
]

#: the mmengine release these adapters were written against
MMENGINE_VERSION = '0.10.7'

#: the :class:`CheckpointHook` method that rotates and writes a checkpoint,
#: with the signature ``(self, runner, step, meta)``
SAVE_CHECKPOINT_WITH_STEP = '_save_checkpoint_with_step'

#: the attributes of :class:`CheckpointHook` an override of
#: :data:`SAVE_CHECKPOINT_WITH_STEP` reads and updates, as mmengine's own
CHECKPOINT_HOOK_STATE = ('max_keep_ckpts', 'keep_ckpt_ids', 'filename_tmpl',
                         'last_ckpt', 'out_dir', 'file_client_args',
                         'save_optimizer', 'save_param_scheduler', 'by_epoch',
                         'backend_args', 'args', 'file_backend')


def is_resuming(runner: Any) -> bool:
    """Whether ``runner`` resumes training (``resume=True``, ``--resume``)
    rather than only loading weights (``load_from``): ``Runner._resume``.
    """
    return bool(getattr(runner, '_resume', False))


def wrap_train_iterator(loop: Any, wrap: Callable[[Iterator],
                                                  Iterator]) -> bool:
    """Replace an :class:`IterBasedTrainLoop`'s ``dataloader_iterator``
    (the iterator its ``run`` draws every batch from, the skipped batches
    of a resume included) by ``wrap(iterator)``.

    Returns:
        bool: False, leaving ``loop`` as it is, when the loop has no such
        iterator (an :class:`EpochBasedTrainLoop`).
    """
    if not hasattr(loop, 'dataloader_iterator'):
        return False
    loop.dataloader_iterator = wrap(loop.dataloader_iterator)
    return True


def unwrap_train_iterator(loop: Any, inner: Iterator) -> None:
    """Put the iterator :func:`wrap_train_iterator` wrapped back."""
    loop.dataloader_iterator = inner
