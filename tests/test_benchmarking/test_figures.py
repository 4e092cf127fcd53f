# Copyright (c) mmseg-resensemble contributors. All rights reserved.
import cv2
import numpy as np
import pytest
import torch

from mmseg_resensemble.benchmarking.figures import (lines_figure,
                                                    per_class_iou_figure,
                                                    reliability_figure)
from mmseg_resensemble.evaluation import CalibrationCounter


def read_png(path):
    img = cv2.imread(path)
    assert img is not None, path
    return img


def test_figures_are_written(tmp_path):
    path = per_class_iou_figure(['sky', 'road', 'car'], {
        'E2E': [90, 80, float('nan')],
        'ResEnsemble': [91, 82, 40]
    }, str(tmp_path / 'sub' / 'iou.png'), 'title')
    wide = read_png(path)
    counter = CalibrationCounter()
    counter.add(
        torch.tensor([[0.9, 0.3], [0.1, 0.7]]).reshape(2, 1, 2),
        torch.tensor([[0, 0]]))
    panels = {name: counter.summary() for name in 'abcde'}
    tall = read_png(reliability_figure(panels, str(tmp_path / 'rel.png')))
    # five panels: two rows of four
    assert tall.shape[0] > 1.5 * read_png(
        reliability_figure(dict(a=panels['a']), str(
            tmp_path / 'one.png'))).shape[0]
    read_png(
        lines_figure([1, 2, 4], dict(a=[1, None, 3]),
                     str(tmp_path / 'lines.png'), 'steps', 'ms'))
    assert wide.shape[1] > wide.shape[0]


def test_figures_refuse_mismatched_lengths(tmp_path):
    with pytest.raises(ValueError, match="'E2E' has 2 IoU values"):
        per_class_iou_figure(['a', 'b', 'c'], dict(E2E=np.ones(2)),
                             str(tmp_path / 'x.png'))
    with pytest.raises(ValueError, match="'a' has 1 values"):
        lines_figure([1, 2], dict(a=[1]), str(tmp_path / 'y.png'), 'x', 'y')
    with pytest.raises(ValueError, match='at least one panel'):
        reliability_figure({}, str(tmp_path / 'z.png'))
