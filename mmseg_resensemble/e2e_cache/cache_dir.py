# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""Point a config's E2E cache at another directory."""
from typing import Any

__all__ = ['config_type_name', 'e2e_cache_hooks', 'set_e2e_cache_dir']


def config_type_name(cfg: Any) -> str:
    """The ``type`` of a component config (a name or a class), as a
    name; '' if it has none."""
    t = cfg.get('type', '') if isinstance(cfg, dict) else ''
    return t if isinstance(t, str) else getattr(t, '__name__', str(t))


def e2e_cache_hooks(cfg: Any) -> list:
    """The ``E2ECacheHook`` entries of a config's ``custom_hooks``."""
    return [
        h for h in cfg.get('custom_hooks') or []
        if config_type_name(h) == 'E2ECacheHook'
    ]


def _set_in_dataset(dataset: Any, cache_dir: str) -> int:
    """Set ``cache_dir`` of the ``LoadE2ECache`` of a data set config and
    of the data sets it wraps (``dataset``, ``datasets``)."""
    if not isinstance(dataset, dict):
        return 0
    done = 0
    for t in dataset.get('pipeline') or []:
        if config_type_name(t) == 'LoadE2ECache':
            t['cache_dir'] = cache_dir
            done += 1
    done += _set_in_dataset(dataset.get('dataset'), cache_dir)
    for inner in dataset.get('datasets') or []:
        done += _set_in_dataset(inner, cache_dir)
    return done


def set_e2e_cache_dir(cfg: Any, cache_dir: str) -> int:
    """Give the config's ``E2ECacheHook`` and every ``LoadE2ECache`` of its
    training set the directory ``cache_dir`` (what the configs'
    ``e2e_cache_dir`` variable does when the file is written; ``--cfg-options``
    cannot change a variable after the file is read). The tools'
    ``--e2e-cache-dir`` calls it before the runner is built.

    Args:
        cfg (Config | dict): A training config.
        cache_dir (str): The cache directory.

    Returns:
        int: How many entries were set (the hook and the transforms).

    Raises:
        ValueError: If the config has no ``E2ECacheHook``.
    """
    if not isinstance(cache_dir, str) or not cache_dir:
        raise ValueError(f'cache_dir must be a non-empty str, got '
                         f'{cache_dir!r}')
    hooks = e2e_cache_hooks(cfg)
    if not hooks:
        raise ValueError('the config has no E2ECacheHook in custom_hooks: '
                         'there is no E2E cache to point elsewhere')
    for hook in hooks:
        hook['cache_dir'] = cache_dir
    loader = cfg.get('train_dataloader') or {}
    return len(hooks) + _set_in_dataset(loader.get('dataset'), cache_dir)
