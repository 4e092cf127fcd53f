# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""Building and loading the frozen end-to-end (E2E) learner."""
import copy
import logging
import os.path as osp
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.config import Config, ConfigDict
from mmengine.hub import get_config
from mmengine.logging import print_log
from mmengine.utils import import_modules_from_strings
from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS
from torch import Tensor

from mmseg_resensemble.utils.checkpoint_checks import (checkpoint_state_dict,
                                                       read_checkpoint)

E2E_TYPES_HINT = ('an MMSeg segmentor config file (a path, or a model-zoo '
                  "config such as 'mmseg::fcn/fcn_r50-d8_4xb2-40k_"
                  "cityscapes-512x1024.py') or a model dict")


def load_e2e_config(e2e: Union[str, dict]) -> ConfigDict:
    """The E2E learner's model config from a config file or a dict.

    Args:
        e2e (str | dict): Path of an MMSeg config file (``mmseg::`` scope
            included), whose ``model`` is used (its ``custom_imports`` are
            imported), or a model config dict.

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
        if cfg.get('custom_imports'):
            # e.g. mmdet.models for the zoo's Mask2Former/MaskFormer
            import_modules_from_strings(**cfg.custom_imports)
        return ConfigDict(cfg.model)
    if isinstance(e2e, dict):
        if 'type' not in e2e:
            raise ValueError(f'the E2E model dict has no `type`: {e2e}')
        return ConfigDict(e2e)
    raise TypeError(f'e2e must be {E2E_TYPES_HINT}, got {type(e2e)}')


def is_absent_file(filename: str) -> bool:
    """Whether ``filename`` names a local file that does not exist (a URL
    or other checkpoint-loader prefix such as ``s3://`` never is)."""
    return '://' not in filename and not osp.isfile(filename)


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
    if is_absent_file(filename):
        raise FileNotFoundError(f'e2e_checkpoint {filename!r} does not exist')
    try:
        state_dict = checkpoint_state_dict(read_checkpoint(filename))
    except ValueError as e:
        raise ValueError(f'e2e_checkpoint: {e}') from e
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
        print_log(msg, logger='current', level=logging.WARNING)
    else:
        print_log(
            f'Loaded the frozen E2E learner from {filename}', logger='current')


SUPPORTED_E2E = ('MMSeg EncoderDecoder-style segmentors: EncoderDecoder, '
                 'CascadeEncoderDecoder and their subclasses')
# the feature size of the probe that in_channels='auto' runs at build time
AUTO_PROBE_SIZE = (64, 64)


def check_e2e_type(e2e_cfg: ConfigDict) -> None:
    """Raise ``TypeError`` before building an unsupported E2E learner.

    Args:
        e2e_cfg (ConfigDict): The E2E model config.
    """
    e2e_type = e2e_cfg['type']
    cls = MODELS.get(e2e_type) if isinstance(e2e_type, str) else e2e_type
    if cls is None:
        raise KeyError(f'E2E learner type {e2e_type!r} is not registered in '
                       'mmseg (is its package imported?)')
    if not (isinstance(cls, type) and issubclass(cls, EncoderDecoder)):
        name = getattr(cls, '__name__', repr(cls))
        raise TypeError(
            f'the E2E learner is a {name}, which ResEnsembleSegmentor does '
            f'not support: it needs {SUPPORTED_E2E} (a backbone, an '
            'optional neck and decode head(s) whose predict() gives '
            'per-class maps)')


def merge_data_preprocessor(e2e_cfg: ConfigDict,
                            data_preprocessor: Optional[dict]) -> dict:
    """The ResEnsemble data preprocessor.

    Args:
        e2e_cfg (ConfigDict): The E2E model config.
        data_preprocessor (dict, optional): The ResEnsemble config's. None
            takes the E2E learner's; a dict without ``type`` updates the
            E2E learner's (e.g. ``dict(size=(180, 240))``); a dict with
            ``type`` replaces it.

    Returns:
        dict: The data preprocessor config.
    """
    e2e_pre = e2e_cfg.get('data_preprocessor')
    if data_preprocessor is None:
        return e2e_pre
    if 'type' in data_preprocessor:
        return data_preprocessor
    if e2e_pre is None:
        raise ValueError(
            f'data_preprocessor={dict(data_preprocessor)} has no `type` and '
            'the E2E learner has no data_preprocessor to update')
    merged = Config(dict(pre=copy.deepcopy(e2e_pre)))
    merged.merge_from_dict(dict(pre=copy.deepcopy(data_preprocessor)))
    return merged.pre


def e2e_test_mode(e2e_cfg: ConfigDict) -> dict:
    """The E2E config's test mode: ``mode`` ('whole' when unset) and, for
    'slide', its ``crop_size`` and ``stride``."""
    test_cfg = e2e_cfg.get('test_cfg') or {}
    mode = test_cfg.get('mode', 'whole')
    out = dict(mode=mode)
    if mode == 'slide':
        out.update(
            crop_size=test_cfg.get('crop_size'), stride=test_cfg.get('stride'))
    return out


def feature_levels(feats: Union[Tensor, Sequence[Tensor]]) -> List[Tensor]:
    """The E2E learner's features as a list of levels: a backbone that
    returns one tensor (PIDNet, DDRNet in eval mode) gives one level."""
    if isinstance(feats, Tensor):
        return [feats]
    return list(feats)


def auto_levels(shapes: Sequence[Sequence[int]]) -> Tuple[int, ...]:
    """The default condition levels: the highest-resolution and the
    lowest-resolution feature levels (the first of each among equals).

    Args:
        shapes (Sequence[Sequence[int]]): (C, h, w) of each level.

    Returns:
        tuple[int]: One index, or two (finest first).
    """
    areas = [h * w for _, h, w in shapes]
    finest = areas.index(max(areas))
    coarsest = len(areas) - 1 - areas[::-1].index(min(areas))
    if finest == coarsest:
        return (finest, )
    return (finest, coarsest)


@torch.no_grad()
def resolve_in_channels(head_cfg: ConfigDict, e2e: nn.Module) -> ConfigDict:
    """Fill ``in_channels='auto'`` of the diffusion head's config from the
    E2E learner's features.

    One forward of :func:`~EncoderDecoder.extract_feat` on a
    ``AUTO_PROBE_SIZE`` input measures the levels. ``in_index`` None (or
    absent) takes :func:`auto_levels`; a given ``in_index`` keeps its
    levels and only their channels are filled in.

    Args:
        head_cfg (ConfigDict): The head's config.
        e2e (nn.Module): The E2E learner, in eval mode.

    Returns:
        ConfigDict: A copy of ``head_cfg`` with ``in_channels`` and
        ``in_index`` set: lists, or ints for one level and
        ``input_transform=None`` (which several levels turn into
        'resize_concat').
    """
    head_cfg = ConfigDict(copy.deepcopy(head_cfg))
    probe = torch.zeros(1, 3, *AUTO_PROBE_SIZE)
    try:
        levels = feature_levels(e2e.extract_feat(probe))
    except Exception as e:
        raise ValueError(
            "in_channels='auto' measures the E2E features on a "
            f'{AUTO_PROBE_SIZE} input, which failed ({type(e).__name__}: '
            f'{e}); set the head\'s in_channels and in_index') from e
    shapes = [tuple(f.shape[1:]) for f in levels]
    in_index = head_cfg.get('in_index')
    if in_index is None:
        in_index = auto_levels(shapes)
    index = [in_index] if isinstance(in_index, int) else list(in_index)
    for i in index:
        if not -len(shapes) <= i < len(shapes):
            raise ValueError(
                f'in_index={tuple(index)} is out of range: the E2E learner '
                f'has {len(shapes)} feature levels of (C, h, w) {shapes}')
    if head_cfg.get('input_transform') is None:
        if len(index) == 1:  # BaseDecodeHead's single level
            head_cfg.in_index = index[0]
            head_cfg.in_channels = shapes[index[0]][0]
            return head_cfg
        head_cfg.input_transform = 'resize_concat'
    head_cfg.in_index = index
    head_cfg.in_channels = [shapes[i][0] for i in index]
    return head_cfg
