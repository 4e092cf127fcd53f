# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""EnsembleWeightHook: the guard of a head that does not hold up."""
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

from mmseg_resensemble.datasets import generate_shapes_dataset
from mmseg_resensemble.engine import EnsembleWeightHook

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
E2E_CONFIG = osp.join(ROOT, 'configs/e2e/fcn_m-v2-d8_1xb8-1k_shapes-96x128.py')
RES_CONFIG = osp.join(
    ROOT, 'configs/resensemble/resensemble_fcn-m-v2-d8_1xb8-2k_shapes-'
    '96x128.py')
K = 5


def small(cfg, data_root, work_dir, iters, lr=None):
    cfg.work_dir = work_dir
    cfg.train_cfg = dict(
        type='IterBasedTrainLoop', max_iters=iters, val_interval=iters)
    cfg.param_scheduler = []
    if lr is not None:
        cfg.optim_wrapper.optimizer.lr = lr
    cfg.default_hooks.checkpoint.interval = iters
    cfg.default_hooks.logger.interval = iters
    for name in ('train', 'val', 'test'):
        loader = cfg[f'{name}_dataloader']
        loader.num_workers = 0
        loader.persistent_workers = False
        loader.dataset.data_root = data_root
    cfg.train_dataloader.batch_size = 4
    return cfg


@pytest.fixture(scope='module')
def wrong_head(tmp_path_factory):
    """An E2E learner trained on the shapes, then a head trained to predict
    the next class of every pixel (wrong labels) with the hook on."""
    tmp = tmp_path_factory.mktemp('guard')
    data_root = generate_shapes_dataset(
        str(tmp / 'shapes'), dict(train=8, val=4), seed=2)
    # the head's labels: class c becomes c + 1 (mod K)
    wrong = osp.join(data_root, 'ann_dir', 'wrong')
    cv2.os.makedirs(wrong)
    for name in cv2.os.listdir(osp.join(data_root, 'ann_dir', 'train')):
        label = cv2.imread(
            osp.join(data_root, 'ann_dir', 'train', name),
            cv2.IMREAD_UNCHANGED)
        cv2.imwrite(
            osp.join(wrong, name),
            np.where(label == 255, 255, (label + 1) % K).astype(np.uint8))
    e2e = small(
        Config.fromfile(E2E_CONFIG), data_root, str(tmp / 'e2e'), 60, lr=0.05)
    e2e.val_cfg = e2e.val_dataloader = e2e.val_evaluator = None
    Runner.from_cfg(e2e).train()
    cfg = small(
        Config.fromfile(RES_CONFIG), data_root, str(tmp / 'head'), 60, lr=5e-3)
    cfg.model.e2e_checkpoint = osp.join(str(tmp / 'e2e'), 'iter_60.pth')
    cfg.model.decode_head.channels = 16
    cfg.model.test_cfg.ensemble_weight = 'auto'
    cfg.train_dataloader.dataset.data_prefix.seg_map_path = 'ann_dir/wrong'
    cfg.custom_hooks = [dict(type='EnsembleWeightHook')]
    runner = Runner.from_cfg(cfg)
    runner.train()
    metrics = runner.test()
    return runner, metrics


def test_a_head_trained_on_wrong_labels_falls_back_to_the_e2e_learner(
        wrong_head):
    runner, metrics = wrong_head
    model = runner.model
    chosen = float(model.decode_head.chosen_ensemble_weight)
    assert chosen <= 0.2
    # stored with the checkpoint of the last iteration
    ckpt = torch.load(osp.join(runner.work_dir, 'iter_60.pth'))
    assert float(
        ckpt['state_dict']['decode_head.chosen_ensemble_weight']) == chosen
    # on the test images: within 0.5 of the E2E learner alone
    assert metrics['mIoU'] >= metrics['e2e_mIoU'] - 0.5
    # while Eq. 15 falls far below it: the head did learn the wrong labels
    model.test_cfg['ensemble_weight'] = 0.5
    half = runner.test()
    assert half['mIoU'] < metrics['e2e_mIoU'] - 5


def test_the_scores_come_from_one_pass_and_fixed_weights_are_kept(wrong_head):
    from mmseg_resensemble.engine import ensemble_weight_scores
    runner, metrics = wrong_head
    model = runner.model
    scores = ensemble_weight_scores(model, runner.test_dataloader,
                                    [0., 0.5, 1.])
    # w = 0 is the E2E learner alone (x̂0 at the head's resolution)
    assert abs(scores[0.] - metrics['e2e_mIoU']) < 2
    assert scores[1.] < scores[0.]
    assert model.test_cfg['ensemble_weight'] == 0.5  # left as it was
    # a weight fixed by the config is not replaced
    model.decode_head.chosen_ensemble_weight.fill_(0.7)
    hook = EnsembleWeightHook(weights=[0., 1.])
    hook.is_last_train_iter = lambda runner: True
    hook.after_train_iter(runner, 0)
    assert float(
        model.decode_head.chosen_ensemble_weight) == pytest.approx(0.7)


@pytest.mark.parametrize('weights', [[], [-0.1], [1.5]])
def test_bad_weights_are_named(weights):
    with pytest.raises(ValueError, match='weights must be numbers'):
        EnsembleWeightHook(weights=weights)
