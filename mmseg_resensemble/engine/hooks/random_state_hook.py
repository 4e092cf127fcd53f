# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""Exact resume: random-number-generator states in the checkpoints.

mmengine 0.10 saves the weights, the optimizer, the schedulers and the
message hub, and :class:`IterBasedTrainLoop` skips the batches already
trained on when it resumes, but no random-number-generator state is saved.
After ``--resume`` the diffusion learner then draws other steps t and
noises ε (torch's global generator) than the uninterrupted run would have,
and the weights part ways. :class:`RandomStateHook` stores the states of
python's ``random``, numpy's global generator, torch's CPU generator and
every CUDA device's generator, per rank, in each checkpoint, and puts them
back where the uninterrupted run would stand. See ``docs/reliability.md``.
"""
import logging
import random
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_dist_info, get_rank
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log
from mmseg.registry import HOOKS

from ..mmengine_internals import (is_resuming, unwrap_train_iterator,
                                  wrap_train_iterator)

__all__ = ['RandomStateHook', 'get_random_states', 'set_random_states']

STATE_VERSION = 1


def get_random_states() -> Dict[str, Any]:
    """The states of this process's global random-number generators.

    Everything is stored as tensors, ints, floats, strings and tuples, so
    that ``torch.load(..., weights_only=True)`` reads it back.

    Returns:
        dict: ``python`` (``random.getstate()``), ``numpy`` (numpy's
        legacy global ``RandomState`` with its MT19937 key as an int64
        tensor), ``torch`` (the CPU generator's state) and, when CUDA is
        available, ``cuda`` (one state per visible device).
    """
    np_state = np.random.get_state(legacy=False)
    states = dict(
        python=random.getstate(),
        numpy=dict(
            bit_generator=np_state['bit_generator'],
            key=torch.from_numpy(np_state['state']['key'].astype(np.int64)),
            pos=int(np_state['state']['pos']),
            has_gauss=int(np_state['has_gauss']),
            gauss=float(np_state['gauss'])),
        torch=torch.get_rng_state())
    if torch.cuda.is_available():
        states['cuda'] = torch.cuda.get_rng_state_all()
    return states


def set_random_states(states: Dict[str, Any]) -> List[str]:
    """Restore states from :func:`get_random_states`.

    Args:
        states (dict): The states.

    Returns:
        list[str]: Warnings, e.g. CUDA states saved on a machine with
        another number of devices (those are then left as they are).
    """
    for key in ('python', 'numpy', 'torch'):
        if key not in states:
            raise ValueError(f'random states lack {key!r}: found '
                             f'{sorted(states)}')
    warnings = []
    version, internal, gauss = states['python']
    random.setstate((version, tuple(internal), gauss))
    np_state = states['numpy']
    np.random.set_state(
        dict(
            bit_generator=np_state['bit_generator'],
            state=dict(
                key=np_state['key'].numpy().astype(np.uint32),
                pos=np_state['pos']),
            has_gauss=np_state['has_gauss'],
            gauss=np_state['gauss']))
    torch.set_rng_state(states['torch'])
    cuda_states = states.get('cuda')
    if cuda_states:
        if not torch.cuda.is_available():
            warnings.append(f'{len(cuda_states)} CUDA generator states were '
                            'saved but CUDA is not available here')
        elif len(cuda_states) != torch.cuda.device_count():
            warnings.append(
                f'{len(cuda_states)} CUDA generator states were saved but '
                f'{torch.cuda.device_count()} devices are visible here; the '
                'CUDA generators are not restored')
        else:
            torch.cuda.set_rng_state_all(cuda_states)
    elif torch.cuda.is_available():
        warnings.append('no CUDA generator states were saved; the CUDA '
                        'generators are not restored')
    return warnings


class _RestoreBeforeNext:
    """Wrap a train loop's ``dataloader_iterator``: after ``skip`` batches
    (the batches that :class:`IterBasedTrainLoop` skips on resume), restore
    the random states, then fetch the next batch and unwrap itself."""

    def __init__(self, loop: Any, inner: Any, skip: int, restore) -> None:
        self._loop = loop
        self._inner = inner
        self._skip = skip
        self._count = 0
        self._restore = restore

    def __iter__(self) -> '_RestoreBeforeNext':
        return self

    def __next__(self) -> Any:
        if self._count >= self._skip:
            unwrap_train_iterator(self._loop, self._inner)
            self._restore()
            return next(self._inner)
        self._count += 1
        return next(self._inner)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@HOOKS.register_module()
class RandomStateHook(Hook):
    """Save the random-number-generator states in every checkpoint and
    restore them on resume, so that a resumed run continues exactly as the
    uninterrupted one.

    Saved: python's ``random``, numpy's global generator, torch's CPU
    generator and the generators of all visible CUDA devices, of every
    rank (``checkpoint['random_states']``). In a distributed run the ranks'
    states are gathered to rank 0 (one small ``all_gather_object``) at the
    iterations (or epochs) where a :class:`CheckpointHook` saves.

    Restored (only when resuming, ``resume=True`` / ``--resume``; never for
    ``load_from``), at the point where the uninterrupted run stood when it
    saved: with :class:`IterBasedTrainLoop`, after the loop has skipped the
    batches already trained on and before it fetches the next one (the
    skipped batches replay the data pipeline's random draws); with
    :class:`EpochBasedTrainLoop`, before the next epoch's first batch.

    Validation during training does not move the training's random
    streams (``isolate_val``): the states are recorded before each
    validation and put back after it, so a run that validates at the
    iteration of its checkpoint and the run resumed from that checkpoint
    (which does not validate there) draw the same numbers.

    Exactness also needs deterministic kernels
    (``randomness=dict(seed=..., deterministic=True)``), the same number
    of processes and of data workers, and mmengine's default
    ``worker_init_fn``; ``docs/reliability.md`` lists what is covered.

    Args:
        isolate_val (bool): Restore the training's random states after
            each validation during training. Defaults to True.
    """

    priority = 'VERY_HIGH'
    CHECKPOINT_KEY = 'random_states'

    def __init__(self, isolate_val: bool = True) -> None:
        if not isinstance(isolate_val, bool):
            raise ValueError(
                f'isolate_val must be a bool, got {isolate_val!r}')
        self.isolate_val = isolate_val
        self._training = False
        # the states to restore when resuming, this rank's
        self._pending: Optional[Dict[str, Any]] = None
        # all ranks' states recorded for the checkpoint about to be saved
        self._due: Optional[List[Dict[str, Any]]] = None
        # all ranks' states before a validation
        self._val_all: Optional[List[Dict[str, Any]]] = None

    # ------------------------------------------------------------------
    # recording
    # ------------------------------------------------------------------
    @staticmethod
    def _all_ranks_states() -> List[Dict[str, Any]]:
        # [this rank's] in a single process
        return all_gather_object(get_random_states())

    @staticmethod
    def _checkpoint_due(runner, by_epoch: bool) -> bool:
        """Whether a :class:`CheckpointHook` saves at this iteration (or
        epoch), as its ``after_train_iter`` (``after_train_epoch``)
        decides."""
        for hook in runner.hooks:
            if not isinstance(hook,
                              CheckpointHook) or hook.by_epoch != (by_epoch):
                continue
            if by_epoch:
                if hook.every_n_epochs(
                        runner, hook.interval,
                        hook.save_begin) or (hook.save_last and
                                             hook.is_last_train_epoch(runner)):
                    return True
            elif hook.every_n_train_iters(
                    runner, hook.interval,
                    hook.save_begin) or (hook.save_last
                                         and hook.is_last_train_iter(runner)):
                return True
        return False

    def before_train(self, runner) -> None:
        self._training = True

    def after_train(self, runner) -> None:
        self._training = False

    def before_train_iter(self,
                          runner,
                          batch_idx: int,
                          data_batch: Any = None) -> None:
        self._due = None

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch: Any = None,
                         outputs: Optional[dict] = None) -> None:
        """Record every rank's states if a checkpoint is saved now."""
        if self._checkpoint_due(runner, by_epoch=False):
            self._due = self._all_ranks_states()

    def before_train_epoch(self, runner) -> None:
        """Restore the states of a resumed run, or arrange to (see the
        class's docstring)."""
        self._due = None
        if self._pending is None:
            return
        loop = runner.train_loop
        if not wrap_train_iterator(  # IterBasedTrainLoop
                loop, lambda inner: _RestoreBeforeNext(
                    loop, inner, runner.iter, self._restore_pending)):
            self._restore_pending()

    def after_train_epoch(self, runner) -> None:
        if self._checkpoint_due(runner, by_epoch=True):
            self._due = self._all_ranks_states()

    def before_val(self, runner) -> None:
        """Record the training's states before a validation."""
        if not (self.isolate_val and self._training):
            return
        self._val_all = self._all_ranks_states()

    def after_val(self, runner) -> None:
        """Put the training's states back after a validation."""
        if self._val_all is None:
            return
        set_random_states(self._val_all[get_rank()])
        self._val_all = None

    # ------------------------------------------------------------------
    # checkpoints
    # ------------------------------------------------------------------
    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Store all ranks' states under ``checkpoint['random_states']``.

        Called on rank 0 only (``Runner.save_checkpoint`` is
        ``master_only``). A checkpoint saved during a validation (e.g. the
        best one) holds the states from before the validation.
        """
        _, world_size = get_dist_info()
        if self._val_all is not None:
            ranks = self._val_all
        elif self._due is not None:
            ranks = self._due
        else:
            # saved by something else than a CheckpointHook at its
            # interval: only this rank's states can be recorded here
            ranks = [get_random_states()]
            if world_size > 1:
                print_log(
                    'RandomStateHook: a checkpoint saved outside of a '
                    "CheckpointHook's interval holds only rank 0's random "
                    'states; resuming from it restores no states',
                    logger='current',
                    level=logging.WARNING)
        checkpoint[self.CHECKPOINT_KEY] = dict(
            version=STATE_VERSION, world_size=world_size, ranks=ranks)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Keep this rank's states when resuming (not for ``load_from``)."""
        if not is_resuming(runner):
            return
        saved = checkpoint.get(self.CHECKPOINT_KEY)
        if saved is None:
            print_log(
                'RandomStateHook: the checkpoint holds no random states (it '
                'was saved without RandomStateHook); the resumed run will '
                'not repeat the uninterrupted one exactly',
                logger='current',
                level=logging.WARNING)
            return
        rank, world_size = get_dist_info()
        if saved.get('version') != STATE_VERSION:
            raise ValueError(
                f"checkpoint['{self.CHECKPOINT_KEY}'] has version "
                f'{saved.get("version")!r}, RandomStateHook reads '
                f'version {STATE_VERSION}')
        ranks = saved['ranks']
        if saved['world_size'] != world_size or len(ranks) != world_size:
            print_log(
                f'RandomStateHook: the checkpoint holds the random states '
                f'of {len(ranks)} of {saved["world_size"]} processes, this '
                f'run has {world_size}; the states are not restored and the '
                'resumed run will not repeat the uninterrupted one exactly',
                logger='current',
                level=logging.WARNING)
            return
        self._pending = ranks[rank]

    def _restore_pending(self) -> None:
        states, self._pending = self._pending, None
        for warning in set_random_states(states):
            print_log(
                f'RandomStateHook: {warning}',
                logger='current',
                level=logging.WARNING)
        print_log(
            'RandomStateHook: restored the random states of the checkpoint',
            logger='current')
