# Copyright (c) mmseg-resensemble contributors. All rights reserved.
import numpy as np
import pytest
import torch
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample

from mmseg_resensemble.benchmarking import ConfusionCounter, format_iou_table
from mmseg_resensemble.evaluation import ResEnsembleIoUMetric


def sample(gt, pred, e2e=None):
    ds = SegDataSample()
    ds.gt_sem_seg = PixelData(data=torch.tensor(gt)[None])
    ds.pred_sem_seg = PixelData(data=torch.tensor(pred)[None])
    if e2e is not None:
        ds.e2e_pred_sem_seg = PixelData(data=torch.tensor(e2e)[None])
    return ds.to_dict()


def test_scores_ensemble_and_e2e_separately():
    metric = ResEnsembleIoUMetric()
    metric.dataset_meta = dict(classes=('a', 'b'))
    gt = [[0, 0], [1, 1]]
    metric.process({}, [sample(gt, gt, e2e=[[0, 1], [1, 1]])])
    metrics = metric.evaluate(1)
    assert metrics['mIoU'] == 100.0
    # E2E: class a IoU 1/2, class b IoU 2/3
    assert metrics['e2e_mIoU'] == pytest.approx(
        100 * (1 / 2 + 2 / 3) / 2, abs=0.01)


def test_ensemble_only_without_e2e_predictions():
    metric = ResEnsembleIoUMetric()
    metric.dataset_meta = dict(classes=('a', 'b'))
    metric.process({}, [sample([[0, 1]], [[1, 1]])])
    metrics = metric.evaluate(1)
    assert metrics['mIoU'] == 25.0
    assert not any(k.startswith('e2e_') for k in metrics)


def test_confusion_counter_and_table():
    counter = ConfusionCounter(num_classes=3)
    counter.add('x', torch.tensor([[0, 1, 1]]), torch.tensor([[0, 1, 255]]))
    iou = counter.iou('x')
    assert iou[0] == 100 and iou[1] == 100 and np.isnan(iou[2])
    table = format_iou_table(['a', 'b', 'c'], {'x': iou})
    assert 'mIoU' in table and '100.00' in table and 'nan' in table
