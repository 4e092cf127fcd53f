# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""Score both learners of a ResEnsemble model, class by class."""
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from mmseg.evaluation import IoUMetric
from mmseg.structures import SegDataSample


class ConfusionCounter:
    """Per-class intersection and union of several predictions.

    Args:
        num_classes (int): Number of classes.
        ignore_index (int): Label of unlabelled pixels.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.intersect: Dict[str, torch.Tensor] = {}
        self.union: Dict[str, torch.Tensor] = {}

    def add(self, name: str, pred: torch.Tensor, label: torch.Tensor) -> None:
        """Count one (H, W) prediction against its (H, W) label."""
        inter, union, _, _ = IoUMetric.intersect_and_union(
            pred.squeeze().cpu(),
            label.squeeze().cpu().to(pred), self.num_classes,
            self.ignore_index)
        self.intersect[name] = self.intersect.get(name, 0) + inter
        self.union[name] = self.union.get(name, 0) + union

    def iou(self, name: str) -> np.ndarray:
        """Per-class IoU in % (NaN for classes absent from the labels)."""
        union = self.union[name].double()
        iou = self.intersect[name].double() / union
        iou[union == 0] = float('nan')
        return 100 * iou.numpy()


def evaluate_learners(
    model: torch.nn.Module,
    dataloader: Sequence[dict],
    num_classes: int,
    ignore_index: int = 255,
    on_sample: Optional[Callable[[dict, SegDataSample], None]] = None
) -> ConfusionCounter:
    """Run a ResEnsemble model and score the ensemble and the E2E learner.

    Args:
        model (nn.Module): A :class:`ResEnsembleSegmentor` in eval mode.
        dataloader (Iterable[dict]): Test batches (with ground truth).
        num_classes (int): Number of classes.
        ignore_index (int): Label of unlabelled pixels.
        on_sample (Callable, optional): Called with each sample's input
            batch and its predicted :class:`SegDataSample`.

    Returns:
        ConfusionCounter: Counts under 'resensemble' and 'e2e'.
    """
    counter = ConfusionCounter(num_classes, ignore_index)
    with torch.no_grad():
        for batch in dataloader:
            for result in model.test_step(batch):
                label = result.gt_sem_seg.data
                counter.add('resensemble', result.pred_sem_seg.data, label)
                counter.add('e2e', result.e2e_pred_sem_seg.data, label)
                if on_sample is not None:
                    on_sample(batch, result)
    return counter


def format_iou_table(class_names: Sequence[str],
                     columns: Dict[str, np.ndarray],
                     extra_rows: Optional[List[List[str]]] = None) -> str:
    """A plain-text table: one row per class, then mIoU (and extra rows)."""
    names = list(columns)
    width = max(12, *(len(n) + 2 for n in names))
    first = max(len(c) for c in list(class_names) + ['mIoU']) + 2
    lines = ['class'.ljust(first) + ''.join(n.rjust(width) for n in names)]
    for i, cls in enumerate(class_names):
        lines.append(
            cls.ljust(first) + ''.join(f'{columns[n][i]:{width}.2f}'
                                       for n in names))
    lines.append('-' * len(lines[0]))
    lines.append('mIoU'.ljust(first) +
                 ''.join(f'{np.nanmean(columns[n]):{width}.2f}'
                         for n in names))
    for row in extra_rows or []:
        lines.append(row[0].ljust(first) +
                     ''.join(v.rjust(width) for v in row[1:]))
    return '\n'.join(lines)
