# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""Damaged checkpoints named, weights left unloaded refused, --resume
falling back to the newest intact checkpoint."""
import os
import os.path as osp

import pytest
import torch
import torch.nn as nn

import mmseg_resensemble.utils.checkpoint_checks as checkpoint_checks
from mmseg_resensemble.utils import (check_checkpoint_covers_model,
                                     find_resumable_checkpoint,
                                     read_checkpoint)


def save(path, **state):
    torch.save(dict(meta=dict(iter=1), state_dict=state), path)
    return path


def truncate(path):
    with open(path, 'rb') as f:
        data = f.read()
    with open(path, 'wb') as f:
        f.write(data[:len(data) // 2])


@pytest.mark.parametrize('content', ['truncated', b'', b'not a checkpoint'])
def test_unreadable_checkpoint_is_named(tmp_path, content):
    path = str(tmp_path / 'ckpt.pth')
    if content == 'truncated':
        truncate(save(path, w=torch.zeros(1000)))
    else:
        with open(path, 'wb') as f:
            f.write(content)
    with pytest.raises(ValueError, match='could not be read') as info:
        read_checkpoint(path)
    assert repr(path) in str(info.value)
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        read_checkpoint(str(tmp_path / 'missing.pth'))


class Pair(nn.Module):

    def __init__(self):
        super().__init__()
        self.e2e = nn.Linear(2, 2)
        self.decode_head = nn.Linear(2, 2)


def test_checkpoint_must_fill_every_weight(tmp_path):
    model = Pair()
    full = {f'module.{k}': v for k, v in model.state_dict().items()}
    check_checkpoint_covers_model(model, dict(state_dict=full), 'full.pth')
    # an E2E learner's own checkpoint: none of the model's keys
    e2e_only = dict(state_dict={'backbone.weight': torch.zeros(2, 2)})
    with pytest.raises(ValueError) as info:
        check_checkpoint_covers_model(model, e2e_only, 'e2e.pth')
    message = str(info.value)
    assert "'e2e.pth' leaves 4 of the model's 4 weights unloaded" in message
    assert "['decode_head', 'e2e']" in message and 'e2e.weight' in message
    # a test-time augmentation model is checked through its module
    tta = nn.Module()
    tta.module = model
    half = dict(state_dict={'e2e.weight': 0, 'e2e.bias': 0})
    with pytest.raises(ValueError, match=r"2 of the model's 4 .*decode_head"):
        check_checkpoint_covers_model(tta, half, 'half.pth')


def test_resume_falls_back_to_the_newest_intact_checkpoint(
        tmp_path, monkeypatch):
    work_dir = str(tmp_path)
    assert find_resumable_checkpoint(work_dir) is None  # a fresh run
    first = save(osp.join(work_dir, 'iter_1.pth'), w=torch.zeros(10))
    second = save(osp.join(work_dir, 'iter_2.pth'), w=torch.zeros(10))
    third = save(osp.join(work_dir, 'iter_3.pth'), w=torch.zeros(1000))
    for i, path in enumerate((first, second, third)):
        os.utime(path, (1000 + i, 1000 + i))
    with open(osp.join(work_dir, 'last_checkpoint'), 'w') as f:
        f.write(third)
    assert find_resumable_checkpoint(work_dir) == third
    truncate(third)
    truncate(second)
    messages = []
    monkeypatch.setattr(checkpoint_checks, 'print_log',
                        lambda msg, **kwargs: messages.append(msg))
    assert find_resumable_checkpoint(work_dir) == first
    assert any(
        repr(third) in m and f'resuming from {first!r}' in m and second in m
        for m in messages), messages
    truncate(first)
    with pytest.raises(ValueError, match='no checkpoint in') as info:
        find_resumable_checkpoint(work_dir)
    assert all(p in str(info.value) for p in (first, second, third))


def test_keys_a_module_fills_itself_may_be_absent():
    """A checkpoint written before the ensemble weight was chosen and
    stored (``decode_head.chosen_ensemble_weight``) still covers the
    model; a DDP ``module.`` prefix is stripped."""

    class Head(nn.Module):
        optional_state_keys = ('chosen', )

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 1)
            self.register_buffer('chosen', torch.tensor(float('nan')))

    model = nn.Sequential()
    model.add_module('decode_head', Head())
    state = {
        f'module.{k}': v
        for k, v in model.state_dict().items() if 'chosen' not in k
    }
    check_checkpoint_covers_model(model, dict(state_dict=state), 'old.pth')
    assert set(
        checkpoint_checks.checkpoint_state_dict(dict(state_dict=state))) == {
            'decode_head.conv.weight', 'decode_head.conv.bias'
        }
    del state['module.decode_head.conv.bias']
    with pytest.raises(ValueError, match='decode_head.conv.bias'):
        check_checkpoint_covers_model(model, dict(state_dict=state), 'old.pth')
