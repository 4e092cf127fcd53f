# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""A small, deterministic, generated segmentation data set.

It lets the tests and the demo run on a fresh machine with no data and no
network. The classes are told apart by shape *and* by colour, and the
colours of different classes overlap under texture, noise and blur, so a
small segmentor makes real mistakes.
"""
import os
import os.path as osp
from typing import Dict, List, Tuple

import cv2
import numpy as np
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

from .dataset_utils import check_not_empty

CLASSES = ('background', 'disc', 'box', 'triangle', 'ring')
PALETTE = [[0, 0, 0], [220, 20, 60], [0, 128, 255], [255, 200, 0],
           [0, 200, 100]]
# mean colour (BGR, as cv2 writes) of each foreground class; neighbours
# are close so that colour alone is ambiguous
_CLASS_COLOURS = np.array(
    [[150, 90, 80], [110, 120, 90], [120, 90, 120], [90, 120, 120]],
    dtype=np.float32)
IGNORE_INDEX = 255


def _draw_object(canvas: np.ndarray, kind: int, centre: Tuple[int, int],
                 radius: int, angle: float) -> None:
    """Draw a filled object of class ``kind`` (1..4) on a uint8 mask."""
    cx, cy = centre
    if kind == 1:
        cv2.ellipse(canvas, (cx, cy), (radius, int(radius * 0.8)),
                    np.degrees(angle), 0, 360, 1, -1)
    elif kind == 2:
        box = cv2.boxPoints(
            ((cx, cy), (2 * radius, 1.4 * radius), np.degrees(angle)))
        cv2.fillPoly(canvas, [box.astype(np.int32)], 1)
    elif kind == 3:
        pts = [(cx + radius * np.cos(angle + k * 2 * np.pi / 3),
                cy + radius * np.sin(angle + k * 2 * np.pi / 3))
               for k in range(3)]
        cv2.fillPoly(canvas, [np.array(pts, dtype=np.int32)], 1)
    else:
        cv2.circle(canvas, (cx, cy), radius, 1, -1)
        cv2.circle(canvas, (cx, cy), max(radius // 2, 1), 0, -1)


def make_sample(rng: np.random.Generator,
                size: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray]:
    """One image (H, W, 3) uint8 BGR and its label map (H, W) uint8."""
    h, w = size
    # low-frequency coloured background texture
    coarse = rng.normal(110, 20, (max(h // 16, 2), max(w // 16, 2), 3))
    img = cv2.resize(
        coarse.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    label = np.zeros((h, w), np.uint8)
    for _ in range(rng.integers(4, 9)):
        kind = int(rng.integers(1, len(CLASSES)))
        radius = int(rng.integers(max(min(h, w) // 10, 3), min(h, w) // 4))
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        mask = np.zeros((h, w), np.uint8)
        _draw_object(mask, kind, centre, radius, rng.uniform(0, np.pi))
        colour = _CLASS_COLOURS[kind - 1] + rng.normal(0, 25, 3)
        shade = rng.normal(0, 18, (h, w, 1))
        img = np.where(mask[..., None] > 0, colour + shade, img)
        label[mask > 0] = kind
    # a few unlabelled (void) blobs, as in real data sets
    for _ in range(rng.integers(0, 3)):
        cv2.circle(label, (int(rng.integers(0, w)), int(rng.integers(0, h))),
                   int(rng.integers(2, max(min(h, w) // 16, 3))), IGNORE_INDEX,
                   -1)
    img = cv2.GaussianBlur(img, (0, 0), sigmaX=float(rng.uniform(0.5, 1.5)))
    img = img + rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), label


def generate_shapes_dataset(root: str,
                            splits: Dict[str, int] = dict(train=64, val=16),
                            size: Tuple[int, int] = (96, 128),
                            seed: int = 0) -> str:
    """Write the data set in MMSeg's layout, deterministically.

    ``root/img_dir/{split}/NAME.png`` and ``root/ann_dir/{split}/NAME.png``
    (labels 0..4, 255 = void). Existing complete splits are kept.

    Args:
        root (str): Output folder.
        splits (dict[str, int]): Number of images per split.
        size (tuple[int, int]): Image size (H, W).
        seed (int): Seed; the same arguments give the same files.

    Returns:
        str: ``root``.
    """
    for index, (split, count) in enumerate(sorted(splits.items())):
        img_dir = osp.join(root, 'img_dir', split)
        ann_dir = osp.join(root, 'ann_dir', split)
        if osp.isdir(ann_dir) and len(os.listdir(ann_dir)) == count:
            continue
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(ann_dir, exist_ok=True)
        rng = np.random.default_rng([seed, index])
        for i in range(count):
            img, label = make_sample(rng, size)
            cv2.imwrite(osp.join(img_dir, f'{i:05d}.png'), img)
            cv2.imwrite(osp.join(ann_dir, f'{i:05d}.png'), label)
    return root


@DATASETS.register_module()
class SyntheticShapesDataset(BaseSegDataset):
    """The generated shapes data set (5 classes, 255 = void).

    Create it with :func:`generate_shapes_dataset`.
    """
    METAINFO = dict(classes=CLASSES, palette=PALETTE)

    def __init__(self, **kwargs) -> None:
        super().__init__(
            img_suffix='.png',
            seg_map_suffix='.png',
            reduce_zero_label=False,
            **kwargs)

    def load_data_list(self) -> List[dict]:
        """MMSeg's sample list; an empty split raises naming its folder."""
        return check_not_empty(self, super().load_data_list())
