# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""Configure, train (or reuse) and load runs: shared by the demo and the
benchmarks."""
import copy
import os.path as osp
from typing import Optional, Tuple

import torch
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.runner import Runner, load_checkpoint
from mmseg.apis import init_model

from mmseg_resensemble.e2e_cache import (build_e2e_cache, e2e_cache_hooks,
                                         set_e2e_cache_dir)


def load_run_config(path: str,
                    data_root: str,
                    work_dir: str,
                    iters: Optional[int] = None,
                    seed: Optional[int] = None) -> Config:
    """A config with its data root, work dir, length and seed set.

    Data loaders get at most one worker, without persistent workers (a
    small machine runs several runs one after another). A config with an
    ``E2ECacheHook`` gets its E2E cache in ``{work_dir}/e2e_cache``.
    """
    cfg = Config.fromfile(path)
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[key].dataset.data_root = data_root
        cfg[key].num_workers = min(cfg[key].num_workers, 1)
        cfg[key].persistent_workers = False
    cfg.work_dir = work_dir
    cfg.launcher = 'none'
    if e2e_cache_hooks(cfg):
        set_e2e_cache_dir(cfg, osp.join(work_dir, 'e2e_cache'))
    if iters is not None:
        cfg.train_cfg.max_iters = iters
        cfg.train_cfg.val_interval = iters
        cfg.default_hooks.checkpoint.interval = iters
        for scheduler in cfg.param_scheduler:
            scheduler.end = min(scheduler.end, iters)
    if seed is not None:
        cfg.randomness = dict(cfg.get('randomness', {}), seed=seed)
    return cfg


def final_checkpoint(cfg: Config) -> str:
    """The checkpoint an iteration-based run writes last."""
    return osp.join(cfg.work_dir, f'iter_{cfg.train_cfg.max_iters}.pth')


def train_or_reuse(cfg: Config) -> Tuple[str, Optional[dict]]:
    """Train with MMSeg's runner unless the final checkpoint exists.

    Returns:
        tuple: The final checkpoint, and the E2E cache hook's statistics
        (with the seconds it took) when the run built a cache, else None.
    """
    ckpt = final_checkpoint(cfg)
    if osp.isfile(ckpt):
        print_log(f'reusing {ckpt}', 'current')
        return ckpt, None
    runner = Runner.from_cfg(cfg)
    cache = build_e2e_cache(runner)
    runner.train()
    return ckpt, cache


def load_resensemble(cfg: Config, checkpoint: str,
                     **test_cfg) -> torch.nn.Module:
    """MMSeg's ``init_model`` on the CPU, with ``model.test_cfg`` updated by
    ``test_cfg`` (e.g. another sampler) first, loading ``checkpoint``
    strictly.

    The E2E weights come from ``checkpoint`` (``e2e_checkpoint`` is not
    read). ``init_model`` loads non-strictly and only warns about weights of
    another shape, which would then score a half-random head; a run folder
    holding a run of another config (another head size, say) therefore
    raises here.

    Raises:
        ValueError: ``checkpoint`` does not fit ``cfg.model``: the message
            names the missing, unexpected or misshapen weights.
    """
    cfg = copy.deepcopy(cfg)
    cfg.model.e2e_checkpoint = None
    cfg.model.test_cfg = dict(cfg.model.get('test_cfg') or {}, **test_cfg)
    model = init_model(cfg, device='cpu')
    try:
        ckpt = load_checkpoint(
            model, checkpoint, map_location='cpu', strict=True)
    except RuntimeError as error:
        raise ValueError(
            f'checkpoint {checkpoint} does not fit the config it is '
            f'loaded with (a run of another config in its folder? remove '
            f'it or use another work dir): {error}') from None
    if 'dataset_meta' in ckpt.get('meta', {}):
        model.dataset_meta = ckpt['meta']['dataset_meta']
    return model
