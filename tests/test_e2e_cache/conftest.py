# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""Fixtures of the E2E cache tests: one thread, the shapes data set, an E2E
checkpoint and the builder's log."""
import pytest
import torch

import mmseg_resensemble.e2e_cache.builder as builder_module
from mmseg_resensemble.datasets import generate_shapes_dataset
from tests.test_e2e_cache.helpers import SIZE, save_e2e_checkpoint


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    """Tiny models gain nothing from threads on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('shapes'))
    return generate_shapes_dataset(root, splits=dict(train=6), size=SIZE)


@pytest.fixture(scope='module')
def ckpt(tmp_path_factory):
    return save_e2e_checkpoint(
        str(tmp_path_factory.mktemp('ckpt') / 'e2e.pth'))


@pytest.fixture
def logs(monkeypatch):
    """The messages the builder logs."""
    messages = []

    def record(msg, logger=None, level=20):
        messages.append(msg)

    monkeypatch.setattr(builder_module, 'print_log', record)
    return messages
