# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""Checkpoints that cannot be read, or that leave weights unloaded, named.

Used by ``tools/test.py`` (the checkpoint must fill every weight of the
model) and ``tools/train.py --resume`` (a damaged last checkpoint falls
back to the newest intact one).
"""
import glob
import logging
import os
import os.path as osp
import re
from typing import Optional

import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.runner import CheckpointLoader, find_latest_checkpoint

__all__ = [
    'read_checkpoint', 'check_checkpoint_covers_model',
    'find_resumable_checkpoint', 'checkpoint_state_dict', 'REVISE_KEYS'
]

#: prefixes written by model wrappers (DDP's ``module.``), stripped as
#: mmengine's ``load_checkpoint(revise_keys=...)`` does
REVISE_KEYS = [(r'^module\.', '')]


def checkpoint_state_dict(checkpoint: dict) -> dict:
    """The weights of a checkpoint (its ``state_dict``, or the dict
    itself), wrapper prefixes (:data:`REVISE_KEYS`) stripped."""
    state_dict = checkpoint.get('state_dict', checkpoint)
    if not isinstance(state_dict, dict):
        raise ValueError('the checkpoint holds no state dict')
    revised = {}
    for key, value in state_dict.items():
        for pattern, repl in REVISE_KEYS:
            key = re.sub(pattern, repl, key)
        revised[key] = value
    return revised


def optional_state_keys(model: nn.Module) -> set:
    """State-dict keys the model fills itself when a checkpoint lacks
    them: those named by a submodule's ``optional_state_keys`` (e.g. the
    ensemble weight chosen after training, absent from older
    checkpoints)."""
    keys = set()
    for prefix, module in model.named_modules():
        for name in getattr(module, 'optional_state_keys', ()):
            keys.add(f'{prefix}.{name}' if prefix else name)
    return keys


def read_checkpoint(filename: str) -> dict:
    """Read a checkpoint (local path or URL) onto the CPU.

    Raises:
        FileNotFoundError: A local ``filename`` that does not exist.
        ValueError: Naming the file, when it cannot be read (truncated,
            empty, not a checkpoint, refused by the weights-only loader).
    """
    if '://' not in filename and not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint {filename!r} does not exist')
    try:
        checkpoint = CheckpointLoader.load_checkpoint(
            filename, map_location='cpu')
    except Exception as e:  # truncated, empty, text, refused pickle, ...
        raise ValueError(
            f'checkpoint {filename!r} could not be read '
            f'({type(e).__name__}: {str(e)[:300]}); it is truncated, empty '
            'or not a checkpoint: copy or download it again') from e
    if not isinstance(checkpoint, dict):
        raise ValueError(f'checkpoint {filename!r} holds a '
                         f'{type(checkpoint).__name__}, not a checkpoint dict')
    return checkpoint


def check_checkpoint_covers_model(model: nn.Module, checkpoint: dict,
                                  filename: str) -> None:
    """Raise unless ``checkpoint`` holds every weight of ``model``.

    mmengine only logs the keys a checkpoint misses, so testing with, e.g.,
    the E2E learner's checkpoint instead of the ResEnsemble one would run
    with a randomly initialised diffusion head.

    Args:
        model (nn.Module): The model (a model wrapper or a test-time
            augmentation model is unwrapped through ``module``).
        checkpoint (dict): As read by :func:`read_checkpoint`.
        filename (str): For the message.

    Raises:
        ValueError: Listing the model's keys that the checkpoint lacks.
    """
    while is_model_wrapper(model) or isinstance(
            getattr(model, 'module', None), nn.Module):
        model = model.module
    keys = set(checkpoint_state_dict(checkpoint)) | optional_state_keys(model)
    own = list(model.state_dict())
    missing = [k for k in own if k not in keys]
    if missing:
        prefixes = sorted({k.split('.')[0] for k in missing})
        raise ValueError(
            f'checkpoint {filename!r} leaves {len(missing)} of the model\'s '
            f'{len(own)} weights unloaded (under {prefixes}; first: '
            f'{missing[:10]}). Is it the checkpoint of another model, e.g. '
            "the E2E learner's instead of the ResEnsemble one (its "
            'train run\'s iter_N.pth)?')


def find_resumable_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint ``--resume`` should continue from.

    The one ``work_dir/last_checkpoint`` names if it can be read; if it is
    damaged or gone, the newest intact ``*.pth`` in ``work_dir``, with a
    warning naming both. None when there is no ``last_checkpoint`` (a fresh
    run).

    Raises:
        ValueError: ``last_checkpoint`` exists but no checkpoint in
            ``work_dir`` can be read; every damaged file is named.
    """
    last = find_latest_checkpoint(work_dir)
    if last is None:
        return None
    damaged = {}
    try:
        read_checkpoint(last)
        return last
    except (FileNotFoundError, ValueError) as e:
        damaged[last] = str(e)
    candidates = sorted(
        glob.glob(osp.join(work_dir, '*.pth')),
        key=os.path.getmtime,
        reverse=True)
    for path in candidates:
        if osp.realpath(path) == osp.realpath(last):
            continue
        try:
            read_checkpoint(path)
        except ValueError as e:
            damaged[path] = str(e)
            continue
        print_log(
            f'the last checkpoint {last!r} is damaged or missing '
            f'({damaged[last]}); resuming from {path!r}, the newest intact '
            f'checkpoint in {work_dir!r}' +
            (f' (also damaged: {sorted(set(damaged) - {last})})'
             if len(damaged) > 1 else ''),
            logger='current',
            level=logging.WARNING)
        return path
    raise ValueError(f'--resume: no checkpoint in {work_dir!r} can be read: ' +
                     '; '.join(f'{p}: {msg}' for p, msg in damaged.items()))
