# Copyright (c) mmseg-resensemble contributors. All rights reserved.
import torch
from mmengine.config import Config
from mmengine.logging import print_log


def adapt_launcher_cfg(cfg: Config) -> Config:
    """Make a distributed config run on machines without a GPU.

    MMSeg's configs ask for the NCCL backend and mmengine wraps the model
    in DDP with ``device_ids=[LOCAL_RANK]``; both need CUDA. Without CUDA
    this switches to the gloo backend and CPU DDP (``device_ids=None``),
    so ``tools/dist_train.sh CONFIG N`` runs N CPU processes. Configs with
    CUDA, or not launched distributed, are left as they are.

    Args:
        cfg (Config): The run's config, with ``launcher`` set.

    Returns:
        Config: ``cfg``, modified in place.
    """
    if cfg.get('launcher', 'none') == 'none' or torch.cuda.is_available():
        return cfg
    env_cfg = cfg.setdefault('env_cfg', dict())
    dist_cfg = env_cfg.setdefault('dist_cfg', dict())
    if dist_cfg.get('backend', 'nccl') == 'nccl':
        dist_cfg['backend'] = 'gloo'
        print_log(
            'No CUDA device: distributed training uses the gloo backend',
            logger='current')
    wrapper = cfg.get('model_wrapper_cfg') or dict(
        type='MMDistributedDataParallel')
    wrapper.setdefault('device_ids', None)
    cfg.model_wrapper_cfg = wrapper
    return cfg
