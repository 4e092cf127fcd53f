# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""Building and loading the frozen end-to-end (E2E) learner."""
import os.path as osp
from typing import Union

import torch.nn as nn
from mmengine.config import Config, ConfigDict
from mmengine.hub import get_config
from mmengine.logging import print_log
from mmengine.runner.checkpoint import _load_checkpoint

E2E_TYPES_HINT = ('an MMSeg segmentor config file (a path, or a model-zoo '
                  "config such as 'mmseg::fcn/fcn_r50-d8_4xb2-40k_"
                  "cityscapes-512x1024.py') or a model dict")


def load_e2e_config(e2e: Union[str, dict]) -> ConfigDict:
    """The E2E learner's model config from a config file or a dict.

    Args:
        e2e (str | dict): Path of an MMSeg config file (``mmseg::`` scope
            included), whose ``model`` is used, or a model config dict.

    Returns:
        ConfigDict: The model config.
    """
    if isinstance(e2e, str):
        if '::' in e2e:
            # a model-zoo config of an installed package: mmengine resolves
            # the scope only through its hub, not in Config.fromfile
            cfg = get_config(e2e)
        elif not osp.isfile(e2e):
            raise FileNotFoundError(
                f'E2E config file {e2e!r} does not exist; e2e must be '
                f'{E2E_TYPES_HINT}')
        else:
            cfg = Config.fromfile(e2e)
        if 'model' not in cfg:
            raise ValueError(f'E2E config file {e2e!r} has no `model`')
        return ConfigDict(cfg.model)
    if isinstance(e2e, dict):
        if 'type' not in e2e:
            raise ValueError(f'the E2E model dict has no `type`: {e2e}')
        return ConfigDict(e2e)
    raise TypeError(f'e2e must be {E2E_TYPES_HINT}, got {type(e2e)}')


def load_e2e_checkpoint(model: nn.Module,
                        filename: str,
                        strict: bool = True) -> None:
    """Load the E2E learner's weights, reporting every mismatch.

    Args:
        model (nn.Module): The E2E segmentor.
        filename (str): Local path or URL (any mmengine checkpoint loader
            prefix).
        strict (bool): Raise ``ValueError`` on missing or unexpected keys;
            when False they are logged as warnings. Shape mismatches always
            raise.
    """
    if '://' not in filename and not osp.isfile(filename):
        raise FileNotFoundError(f'e2e_checkpoint {filename!r} does not exist')
    try:
        checkpoint = _load_checkpoint(filename, map_location='cpu')
    except Exception as e:  # unreadable file, bad pickle, network, ...
        raise ValueError(
            f'e2e_checkpoint {filename!r} could not be read: {e}') from e
    state_dict = checkpoint.get('state_dict', checkpoint) if isinstance(
        checkpoint, dict) else None
    if not isinstance(state_dict, dict):
        raise ValueError(f'e2e_checkpoint {filename!r} holds no state dict')
    # strip prefixes written by DDP wrappers
    state_dict = {
        k[len('module.'):] if k.startswith('module.') else k: v
        for k, v in state_dict.items()
    }
    own = model.state_dict()
    shape_errors = [
        f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
        for k, v in state_dict.items()
        if k in own and hasattr(v, 'shape') and v.shape != own[k].shape
    ]
    if shape_errors:
        raise ValueError(
            f'e2e_checkpoint {filename!r} does not match the E2E '
            f'architecture ({len(shape_errors)} shape mismatches, first: '
            f'{shape_errors[:5]})')
    result = model.load_state_dict(state_dict, strict=False)
    problems = []
    if result.missing_keys:
        problems.append(f'missing keys ({len(result.missing_keys)}): '
                        f'{result.missing_keys[:10]}')
    if result.unexpected_keys:
        problems.append(f'unexpected keys ({len(result.unexpected_keys)}): '
                        f'{result.unexpected_keys[:10]}')
    if problems:
        msg = (f'e2e_checkpoint {filename!r} does not match the E2E '
               'architecture: ' + '; '.join(problems))
        if strict:
            raise ValueError(msg + ' (set e2e_strict=False to load anyway)')
        print_log(msg, logger='current', level=30)
    else:
        print_log(
            f'Loaded the frozen E2E learner from {filename}', logger='current')
