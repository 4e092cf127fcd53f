# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""RandomStateHook: an interrupted and resumed training ends with the
weights of the uninterrupted one."""
import os
import os.path as osp
import random
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.logging import MessageHub
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset

from mmseg_resensemble.datasets import generate_shapes_dataset
from mmseg_resensemble.engine.hooks.random_state_hook import (
    RandomStateHook, _RestoreBeforeNext, get_random_states, set_random_states)
from tests.helpers import free_port, head_weights

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
RES_CONFIG = osp.join(
    ROOT, 'configs/resensemble/'
    'resensemble_fcn-m-v2-d8_1xb8-2k_shapes-96x128.py')
HOOK_MODULE = 'mmseg_resensemble.engine.hooks.random_state_hook'


def draws():
    """A few numbers from each global generator."""
    return (random.random(), np.random.rand(3).tolist(),
            np.random.randn(3).tolist(), torch.rand(3).tolist(),
            torch.randint(0, 1000, (4, )).tolist())


# ----------------------------------------------------------------------
# the states
# ----------------------------------------------------------------------
def test_states_round_trip_through_a_weights_only_checkpoint(tmp_path):
    np.random.randn()  # numpy's legacy generator now caches a gauss
    states = get_random_states()
    expected = draws()
    path = str(tmp_path / 'states.pth')
    torch.save(dict(random_states=states), path)
    draws()
    # torch >= 2.6 loads with weights_only=True: the states must pass
    loaded = torch.load(path, weights_only=True)['random_states']
    assert set_random_states(loaded) == []
    assert draws() == expected


def test_set_random_states_names_a_missing_generator():
    states = get_random_states()
    del states['numpy']
    with pytest.raises(ValueError, match="'numpy'"):
        set_random_states(states)


def test_validation_does_not_move_the_training_streams():
    hook = RandomStateHook()
    runner = SimpleNamespace()
    hook.before_train(runner)
    states = get_random_states()
    expected = draws()
    set_random_states(states)
    hook.before_val(runner)
    draws()  # the validation draws
    hook.after_val(runner)
    assert draws() == expected

    # isolate_val=False: the validation's draws shift the training's
    hook = RandomStateHook(isolate_val=False)
    hook.before_train(runner)
    set_random_states(states)
    hook.before_val(runner)
    draws()
    hook.after_val(runner)
    assert draws() != expected
    with pytest.raises(ValueError, match='isolate_val'):
        RandomStateHook(isolate_val='yes')


def test_restore_happens_after_the_skipped_batches():
    log = []
    loop = SimpleNamespace()
    inner = iter(range(10))
    loop.dataloader_iterator = _RestoreBeforeNext(loop, inner, 3,
                                                  lambda: log.append('r'))
    for _ in range(5):
        log.append(next(loop.dataloader_iterator))
    # batches 0..2 are skipped, the states restored, then batch 3 fetched
    assert log == [0, 1, 2, 'r', 3, 4]
    assert loop.dataloader_iterator is inner


def _runner(resume):
    return SimpleNamespace(
        _resume=resume,
        hooks=[],
        message_hub=MessageHub.get_current_instance())


def test_states_are_restored_only_when_resuming():
    hook = RandomStateHook()
    checkpoint = {}
    hook.before_save_checkpoint(_runner(False), checkpoint)
    saved = checkpoint['random_states']
    assert saved['version'] == 1 and saved['world_size'] == 1
    assert len(saved['ranks']) == 1

    hook.after_load_checkpoint(_runner(False), checkpoint)  # load_from
    assert hook._pending is None
    hook.after_load_checkpoint(_runner(True), checkpoint)
    assert hook._pending is saved['ranks'][0]

    # another world size: nothing restored
    other = RandomStateHook()
    bad = dict(random_states=dict(saved, world_size=2, ranks=[{}, {}]))
    other.after_load_checkpoint(_runner(True), bad)
    assert other._pending is None
    # a checkpoint without states: nothing restored
    other.after_load_checkpoint(_runner(True), {})
    assert other._pending is None
    with pytest.raises(ValueError, match='version 7'):
        other.after_load_checkpoint(
            _runner(True), dict(random_states=dict(saved, version=7)))


def test_a_checkpoint_saved_during_validation_holds_the_training_states():
    hook = RandomStateHook()
    runner = _runner(False)
    hook.before_train(runner)
    before = get_random_states()
    expected = draws()
    set_random_states(before)
    hook.before_val(runner)
    draws()
    checkpoint = {}
    hook.before_save_checkpoint(runner, checkpoint)  # e.g. the best one
    hook.after_val(runner)
    draws()
    set_random_states(checkpoint['random_states']['ranks'][0])
    assert draws() == expected


# ----------------------------------------------------------------------
# tools/train.py: straight vs. interrupted and resumed
# ----------------------------------------------------------------------
CRASH_HOOK = '''
import os
from mmengine.hooks import Hook
from mmseg.registry import HOOKS


@HOOKS.register_module()
class ExitAtIterHook(Hook):
    """Kill the run (no clean-up) before iteration at_iter + 1."""
    priority = 'LOWEST'

    def __init__(self, at_iter):
        self.at_iter = at_iter

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter == self.at_iter:
            os._exit(3)
'''


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    """Data, the crash hook module and four configs on the demo's."""
    root = tmp_path_factory.mktemp('random_state')
    data = generate_shapes_dataset(
        str(root / 'data'), dict(train=6, val=3), seed=1)
    (root / 'crash_hook.py').write_text(CRASH_HOOK)
    imports = ['mmseg_resensemble', HOOK_MODULE, 'crash_hook']
    base = textwrap.dedent(f'''
        _base_ = [{RES_CONFIG!r}]
        custom_imports = dict(imports={imports!r},
                              allow_failed_imports=False)
        randomness = dict(seed=0, deterministic=True)
        ''')
    hooks = dict(
        hook="[dict(type='RandomStateHook')]",
        hook_crash="[dict(type='RandomStateHook'), "
        "dict(type='ExitAtIterHook', at_iter=3)]",
        nohook='[]',
        nohook_crash="[dict(type='ExitAtIterHook', at_iter=3)]")
    configs = {}
    for name, custom_hooks in hooks.items():
        path = root / f'cfg_{name}.py'
        path.write_text(base + f'custom_hooks = {custom_hooks}\n')
        configs[name] = str(path)
    return SimpleNamespace(root=root, data=data, configs=configs)


def options(data, workers=0, batch_size=2):
    """6 iterations, a checkpoint and a validation every 3."""
    return [
        'train_cfg.max_iters=6', 'train_cfg.val_interval=3',
        'default_hooks.checkpoint.interval=3',
        'default_hooks.logger.interval=1',
        f'train_dataloader.batch_size={batch_size}',
        f'train_dataloader.num_workers={workers}',
        f'train_dataloader.persistent_workers={workers > 0}',
        'val_dataloader.num_workers=0',
        'val_dataloader.persistent_workers=False',
        f'train_dataloader.dataset.data_root={data}',
        f'val_dataloader.dataset.data_root={data}',
        f'test_dataloader.dataset.data_root={data}',
        'model.e2e_checkpoint=None', 'model.test_cfg.num_steps=2'
    ]


def train(setup, cmd, expect_rc=0, env=None):
    env = dict(
        os.environ,
        OMP_NUM_THREADS='1',
        PYTHONPATH=os.pathsep.join([str(setup.root), ROOT]),
        **(env or {}))
    proc = subprocess.run(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600)
    if expect_rc == 0:
        assert proc.returncode == 0, proc.stdout[-4000:]
    else:
        assert proc.returncode != 0, proc.stdout[-4000:]
    return proc.stdout


def interrupted_and_straight(setup, tag, hook, launcher):
    """Train 6 iterations straight; and kill a run after iteration 3 (its
    checkpoint and validation), then --resume it to 6."""
    straight = str(setup.root / f'{tag}_straight')
    broken = str(setup.root / f'{tag}_resumed')
    suffix = '' if hook else 'no'
    launcher(setup.configs[f'{suffix}hook'], straight)
    launcher(setup.configs[f'{suffix}hook_crash'], broken, expect_rc=3)
    assert osp.isfile(osp.join(broken, 'iter_3.pth'))
    assert not osp.exists(osp.join(broken, 'iter_6.pth'))
    out = launcher(setup.configs[f'{suffix}hook'], broken, resume=True)
    assert 'Advance dataloader 3 steps' in out
    assert ('RandomStateHook: restored' in out) == hook
    return (head_weights(osp.join(straight, 'iter_3.pth')),
            head_weights(osp.join(broken, 'iter_3.pth')),
            head_weights(osp.join(straight, 'iter_6.pth')),
            head_weights(osp.join(broken, 'iter_6.pth')), broken)


def single_process(setup, workers=0):

    def launch(config, work_dir, expect_rc=0, resume=False):
        cmd = [
            sys.executable, 'tools/train.py', config, '--work-dir', work_dir
        ] + (['--resume'] if resume else [])
        return train(setup,
                     cmd + ['--cfg-options'] + options(setup.data, workers),
                     expect_rc)

    return launch


def test_resumed_run_equals_straight_run_with_the_hook(setup):
    s3, r3, s6, r6, _ = interrupted_and_straight(setup, 'hook', True,
                                                 single_process(setup))
    assert s3.keys() == s6.keys() and len(s6) > 10
    for k in s3:
        assert torch.equal(s3[k], r3[k]), k
    for k in s6:
        assert torch.equal(s6[k], r6[k]), k


def test_resumed_run_differs_without_the_hook(setup):
    """The point of the hook: without it the resumed run draws other t and
    ε (torch's generator restarts from the seed) and ends elsewhere."""
    s3, r3, s6, r6, _ = interrupted_and_straight(setup, 'nohook', False,
                                                 single_process(setup))
    for k in s3:  # the interruption itself changes nothing
        assert torch.equal(s3[k], r3[k]), k
    differ = [k for k in s6 if not torch.equal(s6[k], r6[k])]
    assert len(differ) > len(s6) // 2, differ


def test_distributed_resume_with_data_workers_is_exact(setup):
    """2 CPU processes (gloo), each rank with its own seed
    (diff_rank_seed) and 2 data workers: the checkpoint holds both ranks'
    states, and advancing the dataloader replays the workers' draws."""

    def launch(config, work_dir, expect_rc=0, resume=False):
        cmd = [
            'bash', 'tools/dist_train.sh', config, '2', '--work-dir', work_dir
        ] + (['--resume'] if resume else [])
        return train(
            setup,
            cmd + ['--cfg-options'] +
            options(setup.data, workers=2, batch_size=1) +
            ['randomness.diff_rank_seed=True'],
            expect_rc,
            env=dict(PORT=str(free_port()), PYTHON=sys.executable))

    s3, r3, s6, r6, broken = interrupted_and_straight(setup, 'dist', True,
                                                      launch)
    saved = torch.load(osp.join(broken, 'iter_3.pth'))['random_states']
    assert saved['world_size'] == 2 and len(saved['ranks']) == 2
    # the ranks' streams differ, so each needs its own states back
    assert not torch.equal(saved['ranks'][0]['torch'],
                           saved['ranks'][1]['torch'])
    for k in s6:
        assert torch.equal(s6[k], r6[k]), k


# ----------------------------------------------------------------------
# EpochBasedTrainLoop, in-process
# ----------------------------------------------------------------------
class NoisyModel(BaseModel):
    """Draws from torch's generator in every training step."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 1)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        x = torch.stack(inputs)
        out = self.linear(x + torch.randn_like(x))
        if mode == 'loss':
            return dict(loss=out.pow(2).mean())
        return out


class AugmentedDataset(Dataset):
    """Draws from numpy's and python's generators for every sample."""

    def __len__(self):
        return 6

    def __getitem__(self, idx):
        scale = np.random.uniform(0.5, 1.5) * random.uniform(0.5, 1.5)
        return dict(inputs=torch.full((4, ), idx * scale))


def epoch_runner(work_dir, max_epochs, hooks, resume=False):
    torch.manual_seed(0)  # the same initial weights in every run
    return Runner(
        model=NoisyModel(),
        work_dir=work_dir,
        train_dataloader=dict(
            batch_size=2,
            num_workers=0,
            sampler=dict(type='DefaultSampler', shuffle=True),
            dataset=AugmentedDataset()),
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1)),
        custom_hooks=hooks,
        resume=resume,
        randomness=dict(seed=0, deterministic=True),
        default_scope='mmseg',
        log_level='WARNING')


@pytest.mark.parametrize('hook', [True, False])
def test_epoch_based_resume(tmp_path, hook):
    hooks = [dict(type='RandomStateHook')] if hook else []
    straight = str(tmp_path / 'straight')
    epoch_runner(straight, 3, hooks).train()
    resumed = str(tmp_path / 'resumed')
    epoch_runner(resumed, 1, hooks).train()  # "interrupted" after epoch 1
    epoch_runner(resumed, 3, hooks, resume=True).train()
    a = torch.load(osp.join(straight, 'epoch_3.pth'))['state_dict']
    b = torch.load(osp.join(resumed, 'epoch_3.pth'))['state_dict']
    first = torch.load(osp.join(straight, 'epoch_1.pth'))['state_dict']
    assert all(
        torch.equal(first[k], v) for k, v in torch.load(
            osp.join(resumed, 'epoch_1.pth'))['state_dict'].items())
    assert all(torch.equal(a[k], b[k]) for k in a) == hook
