# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""The fingerprint of an E2E cache: what its entries depend on.

A cache's meta file holds the fingerprint ``fields`` (JSON) and their
:func:`fingerprint_digest`; every entry holds the digest. A run whose
fields differ (another E2E learner, its weights, the test pipeline, the
classes or the storage format) rebuilds the cache, and the log names the
fields that changed (:func:`changed_fields`).

The digests are part of the cache format: changing what a function here
returns invalidates every cache built before.
"""
import hashlib
import json
import os.path as osp
from typing import Any, Dict, List, Optional

import numpy as np
import torch
import torch.nn as nn

__all__ = [
    'canonical_json', 'file_sha256', 'state_dict_sha256', 'fingerprint_digest',
    'without_weight_sources', 'architecture', 'json_fields',
    'fingerprint_fields', 'out_of_fold_fields', 'changed_fields'
]


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys; tuples become lists, other objects strings."""

    def default(o: Any) -> Any:
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, torch.Tensor):
            return o.tolist()
        if isinstance(o, type):
            return f'{o.__module__}.{o.__qualname__}'
        return str(o)

    return json.dumps(
        obj, sort_keys=True, default=default, separators=(',', ':'))


def file_sha256(path: str, chunk_size: int = 1 << 20) -> str:
    """sha256 of a file's bytes, read in chunks of ``chunk_size``."""
    sha = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(chunk_size), b''):
            sha.update(block)
    return sha.hexdigest()


def state_dict_sha256(module: nn.Module) -> str:
    """sha256 of a module's state dict: names, dtypes, shapes and values."""
    sha = hashlib.sha256()
    for name, value in module.state_dict().items():
        sha.update(name.encode())
        if isinstance(value, torch.Tensor):
            sha.update(f'{value.dtype}{tuple(value.shape)}'.encode())
            data = value.detach().cpu().contiguous().reshape(-1)
            sha.update(data.view(torch.uint8).numpy().tobytes())
        else:
            sha.update(repr(value).encode())
    return sha.hexdigest()


def fingerprint_digest(fields: Dict[str, Any]) -> str:
    """sha256 of the canonical JSON of the fingerprint ``fields``."""
    return hashlib.sha256(canonical_json(fields).encode()).hexdigest()


def without_weight_sources(cfg: Any) -> Any:
    """``cfg`` without its ``init_cfg`` and ``pretrained`` keys, at any
    depth.

    The frozen learner's weights come from its checkpoint, which the
    fingerprint covers by content (``e2e_checkpoint_sha256``,
    ``e2e_state_sha256``); where its initial weights were read from (an
    absolute path that changes when a work dir moves) does not change x̂0.
    """
    if isinstance(cfg, dict):
        return {
            k: without_weight_sources(v)
            for k, v in cfg.items() if k not in ('init_cfg', 'pretrained')
        }
    if isinstance(cfg, (list, tuple)):
        return type(cfg)(without_weight_sources(v) for v in cfg)
    return cfg


def architecture(model: nn.Module) -> list:
    """Each submodule's name, type and ``extra_repr`` (its sizes): the
    module's ``repr`` without the ``init_cfg`` lines mmengine adds."""
    return [[name, type(module).__name__,
             module.extra_repr()] for name, module in model.named_modules()]


def json_fields(**fields: Any) -> Dict[str, Any]:
    """``fields`` as plain JSON values (tuples -> lists, tensors ->
    lists), so that they compare equal after a round trip through JSON."""
    return json.loads(canonical_json(fields))


def fingerprint_fields(model: nn.Module,
                       pipeline_cfg: List[dict],
                       classes: List[str],
                       num_classes: int,
                       *,
                       cfg: Any = None,
                       topk: Optional[int] = None) -> Dict[str, Any]:
    """What a cache entry depends on.

    Args:
        model (ResEnsembleSegmentor): The (unwrapped) model.
        pipeline_cfg (list[dict]): The test pipeline.
        classes (list[str]): The training set's classes.
        num_classes (int): K, the channels of x̂0.
        cfg (Config, optional): The run's config; its ``model.e2e`` is
            resolved to the E2E model config.
        topk (int, optional): The stored top-k, None if dense.

    Returns:
        dict: JSON-serialisable fields.
    """
    # imported here: the store imports this module, and reading a cache
    # needs no models
    from ..models.utils.e2e_learner import is_absent_file, load_e2e_config
    e2e_cfg = None
    model_cfg = cfg.get('model') if cfg is not None else None
    if model_cfg is not None and model_cfg.get('e2e') is not None:
        e2e_cfg = without_weight_sources(
            load_e2e_config(model_cfg['e2e']).to_dict())
    checkpoint = getattr(model, 'e2e_checkpoint', None)
    if checkpoint is None or is_absent_file(checkpoint):
        # the weights came with the whole model (load_from, resume):
        # e2e_state_sha256 covers them
        checkpoint_sha = None
    elif osp.isfile(checkpoint):
        checkpoint_sha = file_sha256(checkpoint)
    else:  # a URL: its bytes are covered by e2e_state_sha256
        checkpoint_sha = f'url:{checkpoint}'
    pre = model.data_preprocessor
    preprocessor = dict(
        type=type(pre).__name__,
        mean=getattr(pre, 'mean', None),
        std=getattr(pre, 'std', None),
        channel_conversion=getattr(pre, 'channel_conversion', None),
        pad_val=getattr(pre, 'pad_val', None),
        test_cfg=getattr(pre, 'test_cfg', None))
    test_cfg = model.e2e.test_cfg
    return json_fields(
        storage=dict(
            dtype='uint8',
            layout='hwc',
            topk=topk,
            resolution='finest-feature-level'),
        e2e_config=e2e_cfg,
        e2e_architecture=fingerprint_digest(
            dict(arch=architecture(model.e2e))),
        e2e_test_cfg=dict(test_cfg) if test_cfg is not None else None,
        e2e_checkpoint_sha256=checkpoint_sha,
        e2e_state_sha256=state_dict_sha256(model.e2e),
        data_preprocessor=preprocessor,
        test_pipeline=pipeline_cfg,
        classes=classes,
        num_classes=num_classes)


def out_of_fold_fields(folds: List[dict]) -> List[dict]:
    """The ``out_of_fold`` field of the fingerprint: per fold, its
    learner's checkpoint by content and its held-out images.

    Args:
        folds (list[dict]): ``dict(checkpoint=..., held_out=[names])``,
            as :class:`E2ECacheBuilder` reads ``out_of_fold``.

    Returns:
        list[dict]: ``dict(checkpoint_sha256, held_out)`` per fold.
    """
    return [
        dict(
            checkpoint_sha256=file_sha256(fold['checkpoint']),
            held_out=sorted(fold['held_out'])) for fold in folds
    ]


def changed_fields(old: Dict[str, Any], new: Dict[str, Any]) -> List[str]:
    """The names of the fingerprint fields that differ, sorted."""
    return sorted(
        k for k in set(old) | set(new)
        if canonical_json(old.get(k)) != canonical_json(new.get(k)))
