# Copyright (c) mmseg-resensemble contributors. All rights reserved.
import gc

import torch
import torch.distributed as torch_dist
from mmengine.config import Config
from mmengine.logging import print_log


def prepare_distributed(cfg: Config) -> Config:
    """Let a distributed run start on machines without a GPU.

    MMSeg's configs ask for the NCCL backend, mmengine's launcher calls
    ``torch.cuda.set_device`` and wraps the model in DDP with
    ``device_ids=[LOCAL_RANK]``: all three need CUDA. Without CUDA this
    switches to the gloo backend and CPU DDP (``device_ids=None``) and, for
    the ``pytorch`` launcher (torchrun, ``tools/dist_train.sh``),
    initialises the gloo process group itself (mmengine then skips its own
    initialisation), so ``tools/dist_train.sh CONFIG N`` runs N CPU
    processes. With CUDA, or without a launcher, nothing changes.

    Args:
        cfg (Config): The run's config, with ``launcher`` set.

    Returns:
        Config: ``cfg``, modified in place.
    """
    launcher = cfg.get('launcher', 'none')
    if launcher == 'none' or torch.cuda.is_available():
        return cfg
    env_cfg = cfg.setdefault('env_cfg', dict())
    dist_cfg = env_cfg.setdefault('dist_cfg', dict())
    if dist_cfg.get('backend', 'nccl') == 'nccl':
        dist_cfg['backend'] = 'gloo'
    wrapper = cfg.get('model_wrapper_cfg') or dict(
        type='MMDistributedDataParallel')
    wrapper.setdefault('device_ids', None)
    cfg.model_wrapper_cfg = wrapper
    if launcher == 'pytorch' and not torch_dist.is_initialized():
        torch_dist.init_process_group(backend=dist_cfg['backend'])
    print_log(
        f'No CUDA device: distributed {launcher} run on the CPU with the '
        f'{dist_cfg["backend"]} backend',
        logger='current')
    return cfg


def shutdown_distributed() -> None:
    """End a distributed run: wait for every rank, free the process group.

    Call it after the last reference to the runner is dropped (the DDP
    wrapper holds the process group). gloo runs each collective on worker
    threads, and a worker frees the finished work, with its tensors, after
    the rank has already moved on. If that happens while the interpreter
    shuts down, the worker cannot take the GIL, the thread is cancelled
    inside a ``noexcept`` destructor and the rank aborts ("terminate called
    without an active exception", SIGABRT), failing the launch. Here a
    barrier waits for the collectives still in flight, and freeing the
    process group joins its worker threads, while Python still runs.
    """
    if not (torch_dist.is_available() and torch_dist.is_initialized()):
        return
    torch_dist.barrier()
    torch_dist.destroy_process_group()
    # the process group is freed, and its threads joined, once nothing
    # refers to it: collect the cycles that may still hold the DDP wrapper
    gc.collect()
