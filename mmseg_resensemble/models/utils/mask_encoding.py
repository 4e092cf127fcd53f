# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""Segmentation maps as continuous diffusion targets.

The paper diffuses masks in a continuous space: the one-hot ground truth
x0 and the E2E learner's probabilities x̂0 are both mapped from [0, 1] to
[-s, s] ("analog" encoding, ``scale`` = s), so that x̄0 = 2·x0 − x̂0 and the
ensemble ½(x̄0 + x̂0) live in the same space.
"""
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def probs_to_analog(probs: Tensor, scale: float) -> Tensor:
    """Map probabilities in [0, 1] to [-scale, scale]."""
    return (2 * probs - 1) * scale


def analog_to_probs(x: Tensor, scale: float) -> Tensor:
    """Inverse of :func:`probs_to_analog` (no clipping)."""
    return (x / scale + 1) / 2


def labels_to_onehot(seg_label: Tensor,
                     num_classes: int,
                     ignore_index: int,
                     size: Tuple[int, int],
                     check: bool = True) -> Tuple[Tensor, Tensor]:
    """One-hot ground truth at the head's working resolution.

    The one-hot map and the valid mask are area-averaged to ``size``, so a
    low-resolution pixel holds the class fractions of the full-resolution
    pixels it covers (soft one-hot at boundaries). A pixel is valid when
    more than half of what it covers is labelled.

    Args:
        seg_label (Tensor): Labels of shape (N, H, W) or (N, 1, H, W);
            ``ignore_index`` marks unlabelled pixels.
        num_classes (int): Number of classes K.
        ignore_index (int): Label value of ignored pixels.
        size (tuple[int, int]): Working resolution (h, w).
        check (bool): Raise ``ValueError`` on labels that are neither a
            class nor ``ignore_index`` (a device-to-host synchronisation);
            without it they count as the nearest class. Defaults to True.

    Returns:
        tuple[Tensor, Tensor]: ``onehot`` of shape (N, K, h, w) in [0, 1]
        (rows sum to 1 on valid pixels) and ``valid`` of shape (N, 1, h, w),
        bool.
    """
    if seg_label.dim() == 4:
        seg_label = seg_label.squeeze(1)
    assert seg_label.dim() == 3, f'expected (N, H, W), got {seg_label.shape}'
    seg_label = seg_label.long()
    valid = seg_label != ignore_index
    bad = valid & ((seg_label < 0) | (seg_label >= num_classes))
    if check and bad.any():
        found = torch.unique(seg_label[bad]).tolist()
        raise ValueError(
            f'labels {found} are out of range for num_classes={num_classes} '
            f'(ignore_index={ignore_index}): a label map holds values that '
            f'are neither a class (0..{num_classes - 1}) nor ignore_index. '
            'Fix those label maps, or set ignore_index (reduce_zero_label '
            'for 1-based labels); CheckImageAndLabel(num_classes=K) in the '
            'pipeline names every such file before training')
    onehot = F.one_hot(
        seg_label.clamp(0, num_classes - 1) * valid,
        num_classes).permute(0, 3, 1, 2).float()
    onehot = onehot * valid.unsqueeze(1)
    frac_valid = valid.unsqueeze(1).float()
    if tuple(seg_label.shape[-2:]) != tuple(size):
        onehot = F.interpolate(onehot, size=size, mode='area')
        frac_valid = F.interpolate(frac_valid, size=size, mode='area')
    onehot = onehot / frac_valid.clamp(min=1e-6)
    return onehot, frac_valid > 0.5
