# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""Pictures that put the two learners side by side."""
from typing import Sequence

import cv2
import numpy as np
from mmseg.structures import SegDataSample


def colourise(label: np.ndarray,
              palette: Sequence[Sequence[int]]) -> np.ndarray:
    """Label map (H, W) -> BGR picture (H, W, 3); unknown labels white."""
    palette = np.asarray(palette, np.uint8)
    out = np.full((*label.shape, 3), 255, np.uint8)
    valid = label < len(palette)
    out[valid] = palette[label[valid]]
    return out[..., ::-1]  # MMSeg palettes are RGB


def side_by_side(img: np.ndarray, result: SegDataSample,
                 palette: Sequence[Sequence[int]]) -> np.ndarray:
    """image | [ground truth |] E2E | ResEnsemble | uncertainty.

    Args:
        img (np.ndarray): The BGR image (H, W, 3) the result belongs to.
        result (SegDataSample): A :class:`ResEnsembleSegmentor` prediction
            (``gt_sem_seg`` is shown when present).
        palette (Sequence): RGB colour of each class.

    Returns:
        np.ndarray: The BGR picture; uncertainty is drawn with the inferno
        colour map, scaled to its maximum.
    """
    size = (img.shape[1], img.shape[0])

    def labels(field):
        label = field.data.squeeze(0).cpu().numpy()
        return cv2.resize(
            colourise(label, palette), size, interpolation=cv2.INTER_NEAREST)

    unc = result.uncertainty.data.squeeze(0).cpu().float().numpy()
    unc = (255 * unc / max(float(unc.max()), 1e-6)).astype(np.uint8)
    unc = cv2.resize(
        cv2.applyColorMap(unc, cv2.COLORMAP_INFERNO),
        size,
        interpolation=cv2.INTER_LINEAR)
    panels = [img]
    if 'gt_sem_seg' in result:
        panels.append(labels(result.gt_sem_seg))
    panels += [
        labels(result.e2e_pred_sem_seg),
        labels(result.pred_sem_seg), unc
    ]
    sep = np.full((img.shape[0], 4, 3), 255, np.uint8)
    row = [p for panel in panels for p in (panel, sep)][:-1]
    return np.concatenate(row, axis=1)
