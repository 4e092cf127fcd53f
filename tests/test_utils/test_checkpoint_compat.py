# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""Weights-only loading of mmengine checkpoints, and of crafted ones."""
import copyreg
import zipfile
from contextlib import contextmanager
from pickle import UnpicklingError

import numpy as np
import pytest
import torch
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner.checkpoint import _load_checkpoint

import mmseg_resensemble  # noqa: F401
from mmseg_resensemble.utils.checkpoint_compat import (HISTORY_BUFFER_METHODS,
                                                       history_buffer_method)


class GetattrChain:
    """Pickles as ``getattr(obj, name)``, as a crafted checkpoint would."""

    def __init__(self, obj, name):
        self.obj, self.name = obj, name

    def __reduce__(self):
        return getattr, (self.obj, self.name)


@contextmanager
def mmengine_pickling(state=None):
    """Pickle ``HistoryBuffer`` as mmengine 0.10 does (its
    ``__getstate__``), without the plugin's reduction; with ``state``,
    every buffer pickles that state instead."""
    reducer = copyreg.dispatch_table.pop(HistoryBuffer)
    original = HistoryBuffer.__getstate__
    if state is not None:
        HistoryBuffer.__getstate__ = lambda self: state
    try:
        yield
    finally:
        HistoryBuffer.__getstate__ = original
        copyreg.pickle(HistoryBuffer, reducer)


def builtins_member(name):
    # getattr(getattr(getattr, '__self__'), name): getattr.__self__ is the
    # builtins module
    return GetattrChain(GetattrChain(getattr, '__self__'), name)


def checkpoint(message_hub):
    return dict(
        meta=dict(iter=1),
        state_dict=dict(w=torch.zeros(2)),
        message_hub=message_hub)


def pickled_globals(path):
    with zipfile.ZipFile(path) as z:
        name = next(n for n in z.namelist() if n.endswith('data.pkl'))
        return z.read(name)


def test_getattr_chain_is_refused(tmp_path):
    path = str(tmp_path / 'crafted.pth')
    torch.save(checkpoint(dict(x=builtins_member('eval'))), path)
    with pytest.raises(UnpicklingError, match='getattr'):
        torch.load(path)
    with pytest.raises(UnpicklingError, match='getattr'):
        _load_checkpoint(path, map_location='cpu')


def test_planted_callable_resume_checkpoint_is_refused(tmp_path):
    """mmengine calls a buffer's statistics methods at every log: a
    checkpoint that plants ``print`` there is refused."""
    path = str(tmp_path / 'iter_1.pth')
    planted = dict(
        max_length=10,
        _log_history=np.array([1.0]),
        _count_history=np.array([1]),
        statistics_methods=dict(mean=builtins_member('print')))
    with mmengine_pickling(planted):
        torch.save(
            checkpoint(
                dict(
                    log_scalars={'train/loss': buffer()},
                    runtime_info=dict(iter=1),
                    resumed_keys={'train/loss': True})), path)
    assert b'statistics_methods' in pickled_globals(path)
    with pytest.raises(UnpicklingError, match='getattr'):
        torch.load(path)
    assert HistoryBuffer._statistics_methods['mean'] is HistoryBuffer.mean


@pytest.mark.parametrize('obj, name', [(HistoryBuffer, '__init__'),
                                       (HistoryBuffer, 'register_statistics'),
                                       (np, 'load'), (getattr, '__self__')])
def test_restricted_getattr_refuses_anything_else(obj, name):
    with pytest.raises(UnpicklingError, match='refusing getattr'):
        history_buffer_method(obj, name)


def buffer():
    buf = HistoryBuffer()
    for v in (1.0, 2.0, 4.0):
        buf.update(v)
    return buf


def test_mmengine_format_checkpoint_still_loads(tmp_path):
    """A checkpoint in mmengine 0.10's own format (written without the
    plugin's reduction) holds getattr(HistoryBuffer, 'mean') and loads."""
    path = str(tmp_path / 'old.pth')
    with mmengine_pickling():
        torch.save(checkpoint(dict(log_scalars={'loss': buffer()})), path)
    assert b'getattr' in pickled_globals(path)
    loaded = torch.load(path)['message_hub']['log_scalars']['loss']
    assert isinstance(loaded, HistoryBuffer)
    assert loaded.mean() == pytest.approx(7 / 3)
    assert {
        name: HistoryBuffer._statistics_methods[name]
        for name in HISTORY_BUFFER_METHODS
    } == {
        name: getattr(HistoryBuffer, name)
        for name in HISTORY_BUFFER_METHODS
    }


def test_new_checkpoints_hold_data_only(tmp_path):
    path = str(tmp_path / 'new.pth')
    torch.save(checkpoint(dict(log_scalars={'loss': buffer()})), path)
    data = pickled_globals(path)
    assert b'getattr' not in data and b'statistics_methods' not in data
    loaded = torch.load(path)['message_hub']['log_scalars']['loss']
    assert loaded.max_length == 1000000
    np.testing.assert_array_equal(loaded.data[0], [1.0, 2.0, 4.0])
    assert loaded.mean() == pytest.approx(7 / 3)
    assert loaded.current() == 4.0
