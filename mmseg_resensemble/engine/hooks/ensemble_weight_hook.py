# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""Choose the ensemble weight on held-out images once training ends."""
from typing import Dict, Optional, Sequence, Union

import numpy as np
import torch
from mmengine.dist import all_reduce
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner
from mmseg.evaluation import IoUMetric
from mmseg.registry import HOOKS
from torch.utils.data import DataLoader

__all__ = ['EnsembleWeightHook', 'ensemble_weight_scores']

#: the weights tried: w = 0 is the E2E learner alone, ½ the paper's Eq. 15
DEFAULT_WEIGHTS = tuple(round(0.1 * i, 1) for i in range(11))


@torch.no_grad()
def ensemble_weight_scores(model: torch.nn.Module, dataloader: DataLoader,
                           weights: Sequence[float]) -> Dict[float, float]:
    """mIoU of the ensemble w·x̄0 + (1 − w)·x̂0 for every w, from one
    sample of x̄0 per image.

    The head returns the two parts of the ensemble (``test_cfg``'s
    ``ensemble_parts``); they are restored to each image's original size
    as MMSeg restores ``seg_logits`` (padding, flip, resize) and combined
    for each w, so the network runs once per image whatever the number of
    weights. In a distributed run each rank scores its shard of the
    images and the counts are summed.

    Args:
        model (nn.Module): A :class:`ResEnsembleSegmentor` (unwrapped).
        dataloader (DataLoader): Images with ``gt_sem_seg``.
        weights (Sequence[float]): The weights w in [0, 1].

    Returns:
        dict[float, float]: mIoU (%) per weight.
    """
    k = model.num_classes
    ignore_index = model.decode_head.ignore_index
    # intersections and unions per weight, kept on the model's device
    counts = torch.zeros(
        len(weights),
        2,
        k,
        dtype=torch.float64,
        device=model.decode_head.chosen_ensemble_weight.device)
    training = model.training
    test_cfg = dict(model.test_cfg)
    model.eval()
    model.test_cfg['ensemble_parts'] = True
    try:
        for data in dataloader:
            data = model.data_preprocessor(data, False)
            samples = data['data_samples']
            maps = model.inference(data['inputs'],
                                   [s.metainfo for s in samples])
            # both parts at once through MMSeg's post-processing
            parts = torch.cat([maps['sample_probs'], maps['e2e_head_probs']],
                              dim=1)
            restored = model.postprocess_result(parts,
                                                model.metainfo_copies(samples))
            for result, sample in zip(restored, samples):
                sample_probs, e2e_probs = result.seg_logits.data.split(k)
                label = sample.gt_sem_seg.data.squeeze(0).to(counts.device)
                for i, w in enumerate(weights):
                    pred = (w * sample_probs +
                            (1 - w) * e2e_probs).argmax(dim=0)
                    inter, union, _, _ = IoUMetric.intersect_and_union(
                        pred, label, k, ignore_index)
                    counts[i, 0] += inter
                    counts[i, 1] += union
    finally:
        model.test_cfg.clear()
        model.test_cfg.update(test_cfg)
        model.train(training)
    all_reduce(counts)
    counts = counts.cpu()
    iou = counts[:, 0] / counts[:, 1]
    miou = np.nanmean(iou.numpy(), axis=1) * 100
    return {float(w): float(m) for w, m in zip(weights, miou)}


@HOOKS.register_module()
class EnsembleWeightHook(Hook):
    """Choose w of the ensemble w·x̄0 + (1 − w)·x̂0 on held-out images at
    the end of training, and store it with the checkpoint.

    A head that learnt something that does not hold on images unlike its
    training images then falls back toward the E2E learner (w = 0)
    instead of below it. At the last training iteration, before
    ``CheckpointHook`` saves it, the hook scores every weight of
    ``weights`` on ``dataloader`` (:func:`ensemble_weight_scores`), logs
    the table and writes the best into the head's
    ``chosen_ensemble_weight``, which ``test_cfg.ensemble_weight='auto'``
    reads at test time (the test split is never looked at). When the
    config fixes ``test_cfg.ensemble_weight`` to a number the hook does
    nothing. Ties go to the smaller weight.

    Args:
        dataloader (dict | DataLoader, optional): The held-out images, for
            instance a split of training images left out of the head's
            training when the data set has no validation split. None (the
            default): the runner's validation dataloader.
        weights (Sequence[float]): The weights tried, each in [0, 1].
            Defaults to 0, 0.1, ..., 1.
    """

    priority = 'NORMAL'  # before CheckpointHook ('VERY_LOW')

    def __init__(self,
                 dataloader: Optional[Union[dict, DataLoader]] = None,
                 weights: Sequence[float] = DEFAULT_WEIGHTS) -> None:
        weights = [float(w) for w in weights]
        if not weights or any(not 0 <= w <= 1 for w in weights):
            raise ValueError('EnsembleWeightHook: weights must be numbers in '
                             f'[0, 1], got {weights}')
        self.dataloader = dataloader
        self.weights = weights

    def after_train_iter(self,
                         runner: Runner,
                         batch_idx: int,
                         data_batch=None,
                         outputs=None) -> None:
        if not self.is_last_train_iter(runner):
            return
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        head = model.decode_head
        # a refiner, or a head without the residual target, has no ensemble
        if not getattr(head, 'residual_target', False):
            return
        fixed = model.test_cfg.get('ensemble_weight', 'auto')
        if fixed != 'auto':
            print_log(
                f'EnsembleWeightHook: test_cfg.ensemble_weight={fixed} is '
                'fixed by the config; nothing chosen', 'current')
            return
        loader = self.dataloader
        if loader is None:
            loader = runner.val_dataloader
        elif isinstance(loader, dict):
            loader = Runner.build_dataloader(
                loader, seed=runner.seed, diff_rank_seed=False)
        scores = ensemble_weight_scores(model, loader, self.weights)
        best = max(scores, key=lambda w: (round(scores[w], 6), -w))
        head.chosen_ensemble_weight.fill_(best)
        table = ', '.join(f'{w:g}: {m:.2f}' for w, m in scores.items())
        print_log(
            f'EnsembleWeightHook: mIoU per ensemble weight w on '
            f'{len(loader.dataset)} held-out images ({table}); chose '
            f'w = {best:g} (w = 0 is the E2E learner alone), stored in the '
            'checkpoint for test_cfg.ensemble_weight=\'auto\'', 'current')
