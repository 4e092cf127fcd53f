# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""Calibration of per-pixel class probabilities, and how well an
uncertainty map tells wrong pixels from right ones.

:class:`CalibrationCounter` accumulates, over images, the expected
calibration error (Guo et al. 2017, equal-width confidence bins), the
negative log-likelihood and the Brier score of (K, H, W) probabilities;
:class:`ErrorDetectionCounter` keeps a fixed random subset of pixels per
image with whether the prediction is wrong and any number of uncertainty
scores, and gives the AUROC and the average precision (AUPRC) of each score
for the wrong pixels. :func:`auroc` and :func:`average_precision` are the
exact tie-aware definitions (as scikit-learn's ``roc_auc_score`` and
``average_precision_score``) in numpy.
"""
from typing import Dict, List, Optional

import numpy as np
import torch
from torch import Tensor


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``x``, tied values sharing their average rank."""
    order = np.argsort(x, kind='mergesort')
    xs = x[order]
    # start of each run of equal values, and the end of the last
    edges = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1], True])
    sizes = np.diff(edges)
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat((edges[:-1] + edges[1:] + 1) / 2, sizes)
    return ranks


def auroc(positive: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve of ``score`` for ``positive`` (the
    Mann-Whitney U statistic; ties count one half).

    Args:
        positive (np.ndarray): (n,) bool.
        score (np.ndarray): (n,) float, higher meaning more likely
            positive.

    Returns:
        float: In [0, 1]; NaN if either class is absent.
    """
    positive = np.asarray(positive, dtype=bool)
    num_pos = int(positive.sum())
    num_neg = len(positive) - num_pos
    if num_pos == 0 or num_neg == 0:
        return float('nan')
    ranks = average_ranks(np.asarray(score, dtype=np.float64))
    u = ranks[positive].sum() - num_pos * (num_pos + 1) / 2
    return float(u / (num_pos * num_neg))


def average_precision(positive: np.ndarray, score: np.ndarray) -> float:
    """Average precision, the area under the precision-recall curve as a
    step function over the distinct thresholds:
    AP = Σₙ (Rₙ − Rₙ₋₁)·Pₙ.

    Args:
        positive (np.ndarray): (n,) bool.
        score (np.ndarray): (n,) float, higher meaning more likely
            positive.

    Returns:
        float: In [0, 1]; NaN without positives. A score that says nothing
        scores the positives' share.
    """
    positive = np.asarray(positive, dtype=bool)
    if not positive.any():
        return float('nan')
    order = np.argsort(-np.asarray(score, dtype=np.float64), kind='mergesort')
    s, y = np.asarray(score)[order], positive[order]
    # the last index of each threshold (each distinct score)
    last = np.r_[np.flatnonzero(s[1:] != s[:-1]), len(s) - 1]
    tp = np.cumsum(y)[last]
    precision = tp / (last + 1)
    recall = tp / y.sum()
    return float(np.sum(np.diff(np.r_[0, recall]) * precision))


def probs_from_logits(logits: Tensor) -> Tensor:
    """(K, H, W) class probabilities from MMSeg's ``seg_logits``: a softmax
    over K > 1 channels; one channel is a sigmoid foreground probability
    (as MMSeg stores it after ``postprocess_result``) made into two."""
    if logits.shape[0] == 1:
        p = logits.float().clamp(0, 1)
        return torch.cat([1 - p, p])
    return logits.float().softmax(0)


class CalibrationCounter:
    """Expected calibration error, NLL and Brier score over images.

    Each labelled pixel counts once: its confidence is the highest class
    probability, correct when that class is the label.

    Args:
        num_bins (int): Equal-width confidence bins over [0, 1]. Defaults
            to 15.
        ignore_index (int): Label of unlabelled pixels. Defaults to 255.
    """

    def __init__(self, num_bins: int = 15, ignore_index: int = 255) -> None:
        if num_bins < 1:
            raise ValueError(f'num_bins must be >= 1, got {num_bins}')
        self.num_bins = num_bins
        self.ignore_index = ignore_index
        self.count = np.zeros(num_bins, dtype=np.int64)
        self.confidence = np.zeros(num_bins)
        self.correct = np.zeros(num_bins)
        self.nll_sum = 0.0
        self.brier_sum = 0.0

    def add(self, probs: Tensor, label: Tensor) -> None:
        """Count one image.

        Args:
            probs (Tensor): (K, H, W) probabilities summing to 1 over K.
            label (Tensor): (H, W) or (1, H, W) class indices.
        """
        label = label.reshape(probs.shape[1:]).long().to(probs.device)
        valid = label != self.ignore_index
        p = probs.float()[:, valid]  # (K, n)
        y = label[valid]
        if y.numel() == 0:
            return
        if int(y.max()) >= p.shape[0]:
            raise ValueError(f'label {int(y.max())} is not below the '
                             f'{p.shape[0]} classes of the probabilities')
        conf, pred = p.max(0)
        p_label = p.gather(0, y[None])[0]
        self.nll_sum += float(-p_label.clamp(min=1e-12).log().double().sum())
        self.brier_sum += float(
            ((p * p).sum(0) - 2 * p_label + 1).double().sum())
        index = (conf * self.num_bins).long().clamp(0, self.num_bins - 1)
        correct = (pred == y).double()
        self.count += torch.bincount(
            index, minlength=self.num_bins).cpu().numpy()
        self.confidence += torch.bincount(
            index, conf.double(), minlength=self.num_bins).cpu().numpy()
        self.correct += torch.bincount(
            index, correct, minlength=self.num_bins).cpu().numpy()

    @property
    def num_pixels(self) -> int:
        return int(self.count.sum())

    def ece(self) -> float:
        """Σ_b (n_b / n)·|accuracy_b − confidence_b|, in %."""
        n = max(self.num_pixels, 1)
        return float(100 * np.abs(self.correct - self.confidence).sum() / n)

    def nll(self) -> float:
        """Mean −log p(label) per pixel (nats)."""
        return self.nll_sum / max(self.num_pixels, 1)

    def brier(self) -> float:
        """Mean Σ_k (p_k − 1[k = label])² per pixel."""
        return self.brier_sum / max(self.num_pixels, 1)

    def reliability(self) -> Dict[str, List[Optional[float]]]:
        """Per bin: its edges, pixel count, mean confidence and accuracy
        (None for an empty bin), for a reliability diagram."""
        n = np.maximum(self.count, 1)
        empty = self.count == 0
        return dict(
            edges=np.linspace(0, 1, self.num_bins + 1).tolist(),
            count=self.count.tolist(),
            confidence=[
                None if e else float(v)
                for e, v in zip(empty, self.confidence / n)
            ],
            accuracy=[
                None if e else float(v)
                for e, v in zip(empty, self.correct / n)
            ])

    def summary(self) -> dict:
        """ECE (%), NLL, Brier and the reliability bins."""
        return dict(
            ECE=self.ece(),
            NLL=self.nll(),
            Brier=self.brier(),
            pixels=self.num_pixels,
            reliability=self.reliability())


class ErrorDetectionCounter:
    """Whether uncertainty scores rank the wrong pixels first.

    Each image contributes the same ``pixels_per_image`` randomly chosen
    labelled pixels (seeded by its index) for every prediction and score,
    so that scores are compared on the same pixels.

    Args:
        pixels_per_image (int): Pixels kept per image (all when fewer are
            labelled). Defaults to 4000.
        ignore_index (int): Label of unlabelled pixels. Defaults to 255.
    """

    def __init__(self,
                 pixels_per_image: int = 4000,
                 ignore_index: int = 255) -> None:
        if pixels_per_image < 1:
            raise ValueError(
                f'pixels_per_image must be >= 1, got {pixels_per_image}')
        self.pixels_per_image = pixels_per_image
        self.ignore_index = ignore_index
        self.errors: List[np.ndarray] = []
        self.scores: Dict[str, List[np.ndarray]] = {}

    def pixels(self, label: Tensor, image_index: int) -> Tensor:
        """Flat indices of the pixels kept of one image's (H, W) label."""
        valid = torch.nonzero(
            label.reshape(-1).cpu() != self.ignore_index).squeeze(1)
        if len(valid) > self.pixels_per_image:
            rng = np.random.default_rng(image_index)
            keep = rng.choice(len(valid), self.pixels_per_image, replace=False)
            valid = valid[torch.from_numpy(np.sort(keep))]
        return valid

    def add(self, pred: Tensor, label: Tensor, scores: Dict[str, Tensor],
            pixels: Tensor) -> None:
        """Count one image.

        Args:
            pred (Tensor): (H, W) predicted classes.
            label (Tensor): (H, W) labels.
            scores (dict[str, Tensor]): Uncertainty maps (H, W), higher
                meaning less sure; every image must give the same names.
            pixels (Tensor): From :meth:`pixels`.
        """
        if self.errors and set(scores) != set(self.scores):
            raise ValueError(f'scores {sorted(scores)} differ from the '
                             f'earlier images\' {sorted(self.scores)}')
        wrong = pred.reshape(-1).cpu()[pixels] != label.reshape(-1).cpu().to(
            pred.dtype)[pixels]
        self.errors.append(wrong.numpy())
        for name, score in scores.items():
            values = score.reshape(-1).float().cpu()[pixels].numpy()
            self.scores.setdefault(name, []).append(values)

    def summary(self) -> dict:
        """Per score: AUROC and AUPRC (%) for the wrong pixels; the error
        rate (%) is the AUPRC of a score that knows nothing."""
        wrong = np.concatenate(self.errors) if self.errors else np.zeros(0)
        out = dict(
            pixels=int(len(wrong)),
            error_rate=float(100 * wrong.mean()) if len(wrong) else None)
        for name, parts in self.scores.items():
            score = np.concatenate(parts)
            out[name] = dict(
                AUROC=100 * auroc(wrong, score),
                AUPRC=100 * average_precision(wrong, score))
        return out
