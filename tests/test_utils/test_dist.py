# Copyright (c) mmseg-resensemble contributors. All rights reserved.
import os

import pytest
import torch
import torch.distributed as torch_dist
from mmengine.config import Config
from mmengine.dist import all_gather_object
from torch.nn.parallel import DistributedDataParallel

from mmseg_resensemble.utils import prepare_distributed, shutdown_distributed
from tests.helpers import free_port


def thread_ids():
    """Ids of this process's threads (Linux). Not their names: torch names
    its gloo threads only in some releases."""
    return set(os.listdir('/proc/self/task'))


def test_prepare_distributed_without_launcher_changes_nothing():
    cfg = Config(dict(launcher='none', env_cfg=dict(dist_cfg=dict())))
    prepare_distributed(cfg)
    assert cfg.env_cfg.dist_cfg == dict()
    assert 'model_wrapper_cfg' not in cfg


@pytest.mark.skipif(
    torch.cuda.is_available(), reason='the CPU fallback is for no GPU')
def test_prepare_distributed_switches_to_gloo_and_cpu_ddp():
    cfg = Config(
        dict(
            launcher='slurm',
            env_cfg=dict(dist_cfg=dict(backend='nccl')),
            model_wrapper_cfg=dict(
                type='MMDistributedDataParallel',
                find_unused_parameters=True)))
    prepare_distributed(cfg)
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert cfg.model_wrapper_cfg == dict(
        type='MMDistributedDataParallel',
        find_unused_parameters=True,
        device_ids=None)
    assert not torch_dist.is_initialized()  # slurm: mmengine initialises


@pytest.mark.skipif(
    not os.path.isdir('/proc/self/task'), reason='lists threads in /proc')
def test_shutdown_distributed_joins_the_gloo_threads():
    """The rank's gloo threads must end before the interpreter does.

    A gloo worker that frees its last collective's tensors during
    interpreter shutdown aborts the rank (SIGABRT after a finished run).
    """
    before = thread_ids()
    torch_dist.init_process_group(
        'gloo',
        init_method=f'tcp://127.0.0.1:{free_port()}',
        rank=0,
        world_size=1)
    try:
        model = DistributedDataParallel(torch.nn.Linear(3, 2))
        model(torch.ones(4, 3)).sum().backward()
        assert all_gather_object(dict(miou=1.0)) == [dict(miou=1.0)]
        assert thread_ids() - before  # gloo's and the store's threads
        # the runner refers to the DDP wrapper through reference cycles
        runner = dict(model=model)
        runner['self'] = runner
        del model, runner  # as tools/train.py drops the runner
    finally:
        shutdown_distributed()
    assert not torch_dist.is_initialized()
    assert thread_ids() - before == set()


def test_shutdown_distributed_without_process_group_is_a_no_op():
    assert not torch_dist.is_initialized()
    shutdown_distributed()
