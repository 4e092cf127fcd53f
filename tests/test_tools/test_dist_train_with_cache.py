# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""Two CPU processes (gloo) through tools/dist_train.sh with the E2E cache.

Ranks must end with identical diffusion-head weights, every training image
must be cached exactly once, and evaluation must gather both ranks'
results.
"""
import os
import os.path as osp
import re
import sys

import torch

from mmseg_resensemble.datasets import generate_shapes_dataset
from tests.helpers import free_port
from tests.test_tools.test_train_test_tools import (E2E_CONFIG, ROOT, run,
                                                    small_run_options)

CACHED = ('configs/resensemble/'
          'resensemble-cached_fcn-m-v2-d8_1xb8-2k_shapes-96x128.py')
# a hook that saves each rank's diffusion head at the end
DUMP_HOOK = '''
import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmseg.registry import HOOKS


@HOOKS.register_module()
class DumpHeadPerRank(Hook):

    def after_run(self, runner):
        model = getattr(runner.model, 'module', runner.model)
        torch.save(model.decode_head.state_dict(),
                   f'{runner.work_dir}/head_rank{get_rank()}.pth')
'''


def test_two_ranks_with_cache(tmp_path):
    data_root = generate_shapes_dataset(
        str(tmp_path / 'data'), dict(train=7, val=5), seed=2)
    e2e_dir = str(tmp_path / 'e2e')
    run([
        sys.executable, 'tools/train.py', E2E_CONFIG, '--work-dir', e2e_dir,
        '--cfg-options'
    ] + small_run_options(data_root, 2, 2))
    (tmp_path / 'dump_head.py').write_text(DUMP_HOOK)
    config = tmp_path / 'cached_two_ranks.py'
    config.write_text(
        f'_base_ = [{osp.join(ROOT, CACHED)!r}]\n'
        "custom_imports = dict(imports=['mmseg_resensemble', 'dump_head'], "
        'allow_failed_imports=False)\n'
        "custom_hooks = [dict(type='E2ECacheHook', cache_dir='e2e_cache'), "
        "dict(type='DumpHeadPerRank')]\n")
    work_dir = str(tmp_path / 'res')
    cache_dir = osp.join(work_dir, 'e2e_cache')
    out = run(
        [
            'bash', 'tools/dist_train.sh',
            str(config), '2', '--work-dir', work_dir, '--e2e-cache-dir',
            cache_dir, '--cfg-options'
        ] + small_run_options(data_root, 3, 3) + [
            f'model.e2e_checkpoint={osp.join(e2e_dir, "iter_2.pth")}',
            'model.test_cfg.num_steps=2'
        ],
        env=dict(
            PYTHON=sys.executable,
            PORT=str(free_port()),
            OMP_NUM_THREADS='1',
            PYTHONPATH=f'{tmp_path}:{os.environ.get("PYTHONPATH", "")}'))
    # every training image cached exactly once, across both ranks
    assert re.search(r'7 images, 0 reused, 7 computed', out), out[-3000:]
    entries = os.listdir(osp.join(cache_dir, 'entries'))
    assert len([e for e in entries if e.endswith('.npz')]) == 7
    # identical diffusion-head weights on both ranks
    heads = [
        torch.load(osp.join(work_dir, f'head_rank{r}.pth')) for r in (0, 1)
    ]
    for k, v in heads[0].items():
        assert torch.equal(v, heads[1][k]), k
    # evaluation gathered both ranks' images (3 + 2 of 5)
    assert 'E2E learner alone (5 images)' in out
