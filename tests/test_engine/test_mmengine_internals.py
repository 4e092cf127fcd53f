# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""The private parts of mmengine the package relies on are still there.

Each test fails when the installed mmengine renames, removes or changes
what :mod:`mmseg_resensemble.engine.mmengine_internals` touches, so an
upgrade breaks loudly here instead of silently in a resumed run.
"""
import inspect

import mmengine
import pytest
import torch.nn as nn
from mmengine.hooks import CheckpointHook
from mmengine.model import BaseModel
from mmengine.runner import IterBasedTrainLoop, Runner

from mmseg_resensemble.engine.hooks import AtomicCheckpointHook
from mmseg_resensemble.engine.mmengine_internals import (
    CHECKPOINT_HOOK_STATE, MMENGINE_VERSION, SAVE_CHECKPOINT_WITH_STEP,
    is_resuming, unwrap_train_iterator, wrap_train_iterator)


class _Tiny(BaseModel):

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        return self.conv(inputs)


def test_written_against_a_version_in_the_supported_range():
    assert MMENGINE_VERSION.startswith('0.10.')
    assert mmengine.__version__.startswith('0.10.'), (
        f'mmengine {mmengine.__version__}: check the adapters of '
        'mmengine_internals.py (written against '
        f'{MMENGINE_VERSION}) and update this test')


@pytest.mark.parametrize('resume', [True, False])
def test_runner_tells_resuming_from_loading(tmp_path, resume):
    # Runner._resume
    assert '_resume' in inspect.getsource(Runner.load_or_resume)
    runner = Runner(
        model=_Tiny(),
        work_dir=str(tmp_path),
        resume=resume,
        default_hooks=dict(),
        env_cfg=dict(dist_cfg=dict(backend='gloo')))
    assert is_resuming(runner) is resume


def test_iter_based_loop_draws_every_batch_from_its_iterator():
    # IterBasedTrainLoop.dataloader_iterator: set in __init__, the skipped
    # batches of a resume and every trained batch are drawn from it
    assert 'self.dataloader_iterator =' in inspect.getsource(
        IterBasedTrainLoop.__init__)
    run = inspect.getsource(IterBasedTrainLoop.run)
    assert 'next(self.dataloader_iterator)' in run
    assert run.index('before_train_epoch') < run.index(
        'next(self.dataloader_iterator)')


def test_wrap_and_unwrap_the_train_iterator():

    class Loop:
        dataloader_iterator = iter([1, 2])

    loop, inner = Loop(), Loop.dataloader_iterator
    assert wrap_train_iterator(loop, lambda it: ('wrapped', it))
    assert loop.dataloader_iterator == ('wrapped', inner)
    unwrap_train_iterator(loop, inner)
    assert loop.dataloader_iterator is inner
    assert not wrap_train_iterator(object(), lambda it: it)


def test_checkpoint_hook_method_and_state_the_atomic_hook_overrides():
    method = getattr(CheckpointHook, SAVE_CHECKPOINT_WITH_STEP)
    assert list(inspect.signature(method).parameters) == [
        'self', 'runner', 'step', 'meta'
    ]
    assert SAVE_CHECKPOINT_WITH_STEP in vars(AtomicCheckpointHook)
    source = inspect.getsource(CheckpointHook)
    # mmengine saves through it at its intervals and at the last iteration
    assert f'self.{SAVE_CHECKPOINT_WITH_STEP}(' in source
    for name in CHECKPOINT_HOOK_STATE:
        assert f'self.{name}' in source, name
    # the rotation the override reorders: delete, then save
    body = inspect.getsource(method)
    assert body.index('keep_ckpt_ids') < body.index('save_checkpoint(')
