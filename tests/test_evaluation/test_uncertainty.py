# Copyright (c) mmseg-resensemble contributors. All rights reserved.
import itertools

import numpy as np
import pytest
import torch

from mmseg_resensemble.evaluation import (CalibrationCounter,
                                          ErrorDetectionCounter, auroc,
                                          average_precision, probs_from_logits)


def pairwise_auroc(positive, score):
    """The definition: P(score of a positive > score of a negative), ties
    counting one half."""
    pos, neg = score[positive], score[~positive]
    wins = sum(
        (p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def stepwise_ap(positive, score):
    """The definition: precision at each distinct threshold, weighted by
    the recall it adds."""
    ap, prev_recall = 0.0, 0.0
    for threshold in sorted(set(score.tolist()), reverse=True):
        chosen = score >= threshold
        tp = (positive & chosen).sum()
        recall = tp / positive.sum()
        ap += (recall - prev_recall) * tp / chosen.sum()
        prev_recall = recall
    return ap


def test_auroc_and_ap_golden_values():
    # scikit-learn's documented examples
    y = np.array([0, 0, 1, 1], bool)
    s = np.array([0.1, 0.4, 0.35, 0.8])
    assert auroc(y, s) == pytest.approx(0.75)
    assert average_precision(y, s) == pytest.approx(0.8333333)
    assert np.isnan(auroc(np.zeros(3, bool), np.arange(3.)))
    assert np.isnan(average_precision(np.zeros(3, bool), np.arange(3.)))


@pytest.mark.parametrize('seed', range(4))
def test_auroc_and_ap_match_their_definitions_with_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.random(40) < 0.3
    s = rng.integers(0, 5, 40).astype(float)  # many ties
    assert auroc(y, s) == pytest.approx(pairwise_auroc(y, s))
    assert average_precision(y, s) == pytest.approx(stepwise_ap(y, s))
    # a constant score knows nothing
    assert auroc(y, np.ones(40)) == pytest.approx(0.5)
    assert average_precision(y, np.ones(40)) == pytest.approx(y.mean())


def test_calibration_counter_oracle():
    # two classes, one image of four pixels, one ignored
    probs = torch.tensor([[0.9, 0.6, 0.2, 0.5], [0.1, 0.4, 0.8, 0.5]])
    probs = probs.reshape(2, 2, 2)
    label = torch.tensor([[0, 1], [1, 255]])
    c = CalibrationCounter(num_bins=10)
    c.add(probs, label)
    assert c.num_pixels == 3
    # confidences 0.9 (right), 0.6 (wrong), 0.8 (right): bins 9, 6, 8
    ece = (abs(1 - 0.9) + abs(0 - 0.6) + abs(1 - 0.8)) / 3
    assert c.ece() == pytest.approx(100 * ece)
    nll = -(np.log(0.9) + np.log(0.4) + np.log(0.8)) / 3
    assert c.nll() == pytest.approx(nll, rel=1e-6)
    brier = ((0.1**2 * 2) + (0.6**2 * 2) + (0.2**2 * 2)) / 3
    assert c.brier() == pytest.approx(brier, rel=1e-6)
    rel = c.reliability()
    assert rel['count'][6] == 1 and rel['accuracy'][6] == 0
    assert rel['confidence'][0] is None
    with pytest.raises(ValueError, match='label 3'):
        c.add(probs, torch.full((2, 2), 3))


def test_calibrated_probabilities_have_a_small_ece():
    torch.manual_seed(0)
    n = 200000
    conf = torch.rand(n) * 0.5 + 0.5  # P(class 0)
    label = (torch.rand(n) > conf).long()  # class 0 with probability conf
    probs = torch.stack([conf, 1 - conf]).reshape(2, 400, 500)
    c = CalibrationCounter()
    c.add(probs, label.reshape(400, 500))
    assert c.ece() < 0.5
    over = CalibrationCounter()
    over.add(
        torch.stack([torch.ones(n), torch.zeros(n)]).reshape(2, 400, 500),
        label.reshape(400, 500))
    assert over.ece() > 20


def test_probs_from_logits():
    logits = torch.randn(3, 4, 5)
    assert torch.allclose(probs_from_logits(logits).sum(0), torch.ones(4, 5))
    sigmoid = torch.rand(1, 4, 5)
    probs = probs_from_logits(sigmoid)
    assert torch.equal(probs[1], sigmoid[0])


def test_error_detection_counter():
    label = torch.tensor([[0, 1, 1], [0, 255, 1]])
    pred = torch.tensor([[0, 0, 1], [1, 0, 1]])  # wrong at (0,1), (1,0)
    good = (pred != label).float()  # an oracle score
    counter = ErrorDetectionCounter(pixels_per_image=100)
    pixels = counter.pixels(label, 0)
    assert len(pixels) == 5  # the ignored pixel is left out
    counter.add(pred, label, dict(oracle=good, blind=torch.ones(2, 3)), pixels)
    out = counter.summary()
    assert out['pixels'] == 5 and out['error_rate'] == pytest.approx(40)
    assert out['oracle'] == dict(AUROC=100, AUPRC=100)
    assert out['blind']['AUROC'] == 50 and out['blind']['AUPRC'] == 40
    with pytest.raises(ValueError, match='differ'):
        counter.add(pred, label, dict(oracle=good), pixels)
    # the kept pixels are a fixed subset per image
    few = ErrorDetectionCounter(pixels_per_image=3)
    assert torch.equal(few.pixels(label, 7), few.pixels(label, 7))
    assert len(few.pixels(label, 7)) == 3
