# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""tools/train.py, tools/test.py and tools/dist_train.sh end to end.

The demo's configs run on a tiny generated data set for a few iterations,
through the same command lines as a user's.
"""
import json
import os
import os.path as osp
import re
import subprocess
import sys

import cv2
import pytest
import torch

from mmseg_resensemble.datasets import generate_shapes_dataset
from tests.helpers import free_port

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
E2E_CONFIG = 'configs/e2e/fcn_m-v2-d8_1xb8-1k_shapes-96x128.py'
RES_CONFIG = ('configs/resensemble/'
              'resensemble_fcn-m-v2-d8_1xb8-2k_shapes-96x128.py')


def small_run_options(data_root, iters, ckpt_interval):
    return [
        f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters}',
        f'default_hooks.checkpoint.interval={ckpt_interval}',
        'default_hooks.logger.interval=1', 'train_dataloader.batch_size=2',
        'train_dataloader.num_workers=0',
        'train_dataloader.persistent_workers=False',
        'val_dataloader.num_workers=0',
        'val_dataloader.persistent_workers=False',
        'test_dataloader.num_workers=0',
        'test_dataloader.persistent_workers=False',
        f'train_dataloader.dataset.data_root={data_root}',
        f'val_dataloader.dataset.data_root={data_root}',
        f'test_dataloader.dataset.data_root={data_root}'
    ]


def run(args, env=None):
    proc = subprocess.run(
        args,
        cwd=ROOT,
        env=dict(os.environ, **(env or {})),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600)

    assert proc.returncode == 0, proc.stdout[-4000:]
    return proc.stdout


def mIoU(output):
    found = re.findall(r'mIoU: ([0-9.]+)', output)
    assert found, output[-3000:]
    return float(found[-1])


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('shapes'))
    return generate_shapes_dataset(root, dict(train=6, val=3), seed=1)


@pytest.fixture(scope='module')
def e2e_run(data_root, tmp_path_factory):
    """Train the E2E learner for 4 iterations, then resume it to 6."""
    work_dir = str(tmp_path_factory.mktemp('e2e'))
    base = [
        sys.executable, 'tools/train.py', E2E_CONFIG, '--work-dir', work_dir,
        '--cfg-options'
    ]
    first = run(base + small_run_options(data_root, 4, 2))
    resumed = run(base[:-1] + ['--resume', '--cfg-options'] +
                  small_run_options(data_root, 6, 2))
    return work_dir, first, resumed


def test_train_resume_and_test_plain_mmseg_config(e2e_run, data_root):
    work_dir, first, resumed = e2e_run
    assert osp.isfile(osp.join(work_dir, 'iter_4.pth'))
    # --resume picked up iteration 4 (torch >= 2.6 weights_only load of
    # mmengine's message hub, optimizer and schedulers)
    assert 'resumed' in resumed.lower() and 'iter_4.pth' in resumed
    assert 'Iter(train) [5/6]' in resumed
    assert 'Iter(train) [1/6]' not in resumed
    ckpt = torch.load(osp.join(work_dir, 'iter_6.pth'))  # weights_only
    assert ckpt['meta']['iter'] == 6
    # without the plugin's allowlist torch refuses mmengine's checkpoint
    plain = subprocess.run([
        sys.executable, '-c',
        f'import torch; torch.load({osp.join(work_dir, "iter_6.pth")!r})'
    ],
                           capture_output=True,
                           text=True)
    assert plain.returncode != 0 and 'HistoryBuffer' in plain.stderr
    out = run([
        sys.executable, 'tools/test.py', E2E_CONFIG,
        osp.join(work_dir, 'iter_6.pth'), '--work-dir', work_dir,
        '--cfg-options'
    ] + small_run_options(data_root, 6, 2))
    assert 0 <= mIoU(out) <= 100


@pytest.fixture(scope='module')
def res_run(e2e_run, data_root, tmp_path_factory):
    """Train ResEnsemble for 3 iterations on the E2E learner."""
    e2e_ckpt = osp.join(e2e_run[0], 'iter_6.pth')
    work_dir = str(tmp_path_factory.mktemp('resensemble'))
    options = small_run_options(data_root, 3, 3) + [
        f'model.e2e_checkpoint={e2e_ckpt}', 'model.test_cfg.num_steps=2'
    ]
    out = run([
        sys.executable, 'tools/train.py', RES_CONFIG, '--work-dir', work_dir,
        '--cfg-options'
    ] + options)
    return work_dir, e2e_ckpt, out, options


def test_train_and_test_resensemble(res_run, data_root):
    work_dir, e2e_ckpt, out, options = res_run
    assert 'decode.loss_diffusion' in out
    ckpt = torch.load(osp.join(work_dir, 'iter_3.pth'))
    e2e_state = torch.load(e2e_ckpt)['state_dict']
    for k, v in e2e_state.items():
        # the frozen E2E weights travel inside the ResEnsemble checkpoint
        assert torch.equal(ckpt['state_dict'][f'e2e.{k}'], v), k
    # the frozen E2E learner is absent from the optimizer
    # (the chosen ensemble weight is a buffer, not a parameter)
    n_trainable = sum(1 for k in ckpt['state_dict']
                      if k.startswith('decode_head.')
                      and k != 'decode_head.chosen_ensemble_weight')
    n_optim = sum(len(g['params']) for g in ckpt['optimizer']['param_groups'])
    assert n_optim == n_trainable
    # testing needs no E2E checkpoint: its weights come from the ResEnsemble
    # checkpoint, whether e2e_checkpoint is None or names an absent file
    # (a shared model); the metric reports both learners
    test_options = [
        o for o in options if not o.startswith('model.e2e_checkpoint')
    ] + [f'model.e2e_checkpoint={osp.join(work_dir, "absent_e2e.pth")}']
    out = run([
        sys.executable, 'tools/test.py', RES_CONFIG,
        osp.join(work_dir, 'iter_3.pth'), '--work-dir', work_dir,
        '--cfg-options'
    ] + test_options)
    assert 0 <= mIoU(out) <= 100
    assert re.search(r'e2e_mIoU: [0-9.]+', out)


def test_infer_tool_and_mmseg_inferencer(res_run, data_root, tmp_path):
    work_dir = res_run[0]
    ckpt = osp.join(work_dir, 'iter_3.pth')
    image = osp.join(data_root, 'img_dir', 'val', '00000.png')
    out_dir = str(tmp_path / 'out')
    # the E2E learner's own file is absent: its weights are in ckpt
    absent = str(tmp_path / 'absent_e2e.pth')
    run([
        sys.executable, 'tools/infer.py', RES_CONFIG, ckpt, image, '--out',
        out_dir, '--num-samples', '2', '--cfg-options',
        'model.test_cfg.num_steps=2', f'model.e2e_checkpoint={absent}'
    ])
    img = cv2.imread(image)
    pred = cv2.imread(osp.join(out_dir, '00000.png'), cv2.IMREAD_UNCHANGED)
    e2e = cv2.imread(osp.join(out_dir, '00000_e2e.png'), cv2.IMREAD_UNCHANGED)
    vis = cv2.imread(osp.join(out_dir, '00000_vis.png'))
    assert pred.shape == e2e.shape == img.shape[:2]
    assert pred.max() < 5
    assert vis.shape[0] == img.shape[0] and vis.shape[1] > 3 * img.shape[1]
    # MMSeg's own inferencer and init_model build and run the model from
    # the config and the trained checkpoint alone
    from mmengine.config import Config
    from mmseg.apis import MMSegInferencer, inference_model, init_model
    cfg = Config.fromfile(osp.join(ROOT, RES_CONFIG))
    cfg.model.e2e_checkpoint = absent
    cfg.model.test_cfg.num_steps = 2
    inferencer = MMSegInferencer(model=cfg, weights=ckpt, device='cpu')
    result = inferencer(image, return_datasamples=True)
    assert result.pred_sem_seg.data.shape[-2:] == img.shape[:2]
    assert 'e2e_pred_sem_seg' in result
    state = torch.load(ckpt)['state_dict']
    model = init_model(cfg, ckpt, device='cpu')
    for k, v in model.state_dict().items():
        if k.startswith('e2e.'):
            assert torch.equal(v, state[k]), k
    assert model.e2e_weights_loaded
    direct = inference_model(model, image)
    assert torch.equal(direct.e2e_pred_sem_seg.data,
                       result.e2e_pred_sem_seg.data)
    assert not osp.exists(absent)


def test_dist_train_and_test_two_cpu_processes(data_root, tmp_path):
    # one thread per process: two processes share the CPU cores
    env = dict(PYTHON=sys.executable, OMP_NUM_THREADS='1')
    out = run(
        [
            'bash', 'tools/dist_train.sh', E2E_CONFIG, '2', '--work-dir',
            str(tmp_path), '--cfg-options'
        ] + small_run_options(data_root, 2, 2),
        env=dict(env, PORT=str(free_port())))
    assert 'gloo' in out
    assert osp.isfile(osp.join(str(tmp_path), 'iter_2.pth'))
    assert 0 <= mIoU(out) <= 100
    out = run(
        [
            'bash', 'tools/dist_test.sh', E2E_CONFIG,
            osp.join(str(tmp_path), 'iter_2.pth'), '2', '--work-dir',
            str(tmp_path), '--cfg-options'
        ] + small_run_options(data_root, 2, 2),
        env=dict(env, PORT=str(free_port())))
    assert 'gloo' in out and 0 <= mIoU(out) <= 100


def test_tune_ensemble_weight(res_run, data_root, tmp_path):
    """One validation pass per weight; w = 0 is the E2E learner alone, so
    its mIoU is the metric's e2e_mIoU; the best weight is written."""
    work_dir, _, _, options = res_run
    out = run([
        sys.executable, 'tools/tune_ensemble_weight.py', RES_CONFIG,
        osp.join(work_dir, 'iter_3.pth'), '--weights', '0', '0.5', '1',
        '--work-dir',
        str(tmp_path), '--cfg-options'
    ] + options)
    result = json.load(open(tmp_path / 'ensemble_weight.json'))
    rows = result['rows']
    assert [r['ensemble_weight'] for r in rows] == [0., 0.5, 1.]
    best = max(rows, key=lambda r: r['mIoU'])
    assert result['best'] == best['ensemble_weight']
    assert f'ensemble_weight={best["ensemble_weight"]:g}' in out
    # the head's probabilities at w = 0 are x̂0 at its working resolution
    assert abs(rows[0]['mIoU'] - rows[0]['e2e_mIoU']) < 2
    for bad in (['--weights', '1.5'], ['--metric', 'nope']):
        proc = subprocess.run(
            [
                sys.executable, 'tools/tune_ensemble_weight.py', RES_CONFIG,
                osp.join(work_dir, 'iter_3.pth'), '--weights', '0',
                '--work-dir',
                str(tmp_path)
            ] + bad + ['--cfg-options'] + options,
            cwd=ROOT,
            capture_output=True,
            text=True)
        assert proc.returncode != 0
        assert bad[1] in proc.stderr
