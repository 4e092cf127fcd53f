# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""Any data set in MMSeg's folder layout, from nothing but the folder.

``DIR/img_dir/{train,val,test}/NAME.<img_suffix>`` and
``DIR/ann_dir/{train,val,test}/NAME.<seg_map_suffix>`` (``val`` optional),
one-channel index labels with 255 = ignore, and ``DIR/classes.txt`` with
one class name a line, in label order (blank lines and lines starting
with '#' are skipped).
"""
import os
import os.path as osp
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import cv2

IMG_SUFFIXES = ('.png', '.jpg', '.jpeg', '.tif', '.tiff', '.bmp')


@dataclass
class FolderLayout:
    """What :func:`inspect_folder` found.

    Attributes:
        data_root (str): The folder.
        classes (list[str]): Class names, in label order.
        splits (dict[str, list[str]]): Sample names (without suffix) of each
            split present: ``train``, ``test`` and maybe ``val``.
        img_suffix (str): Suffix of the images, e.g. '.png'.
        seg_map_suffix (str): Suffix of the labels.
        image_size (tuple[int, int]): (H, W) of the first training image.
    """
    data_root: str
    classes: List[str]
    splits: Dict[str, List[str]] = field(default_factory=dict)
    img_suffix: str = '.png'
    seg_map_suffix: str = '.png'
    image_size: Tuple[int, int] = (0, 0)

    @property
    def eval_split(self) -> str:
        """The split scored by the benchmarks: ``test``."""
        return 'test'


def _suffix(folder: str, given: Optional[str]) -> str:
    if given is not None:
        return given
    suffixes = sorted({
        osp.splitext(name)[1].lower()
        for name in os.listdir(folder)
        if osp.splitext(name)[1].lower() in IMG_SUFFIXES
    })
    if len(suffixes) != 1:
        raise ValueError(f'{folder} holds images with suffixes {suffixes}; '
                         'give the suffix explicitly')
    # keep the case the files use
    for name in sorted(os.listdir(folder)):
        if osp.splitext(name)[1].lower() == suffixes[0]:
            return osp.splitext(name)[1]
    raise AssertionError


def inspect_folder(data_root: str,
                   img_suffix: Optional[str] = None,
                   seg_map_suffix: Optional[str] = None) -> FolderLayout:
    """Read a data set's layout, checking that it is complete.

    Args:
        data_root (str): The data set folder.
        img_suffix (str, optional): Image suffix; found when None.
        seg_map_suffix (str, optional): Label suffix; found when None.

    Returns:
        FolderLayout: Classes, splits and suffixes.

    Raises:
        FileNotFoundError: A required folder or ``classes.txt`` is missing.
        ValueError: A split is empty, or images and labels do not pair up.
    """
    classes_file = osp.join(data_root, 'classes.txt')
    if not osp.isfile(classes_file):
        raise FileNotFoundError(
            f'{classes_file} does not exist: write the class names there, '
            'one a line, in label order')
    with open(classes_file) as f:
        # blank lines and '#' comments are not classes
        classes = [
            line.strip() for line in f
            if line.strip() and not line.lstrip().startswith('#')
        ]
    if len(classes) < 2:
        raise ValueError(f'{classes_file} names {len(classes)} class(es); '
                         'a segmentation data set needs at least 2')
    layout = FolderLayout(data_root=data_root, classes=classes)
    for split in ('train', 'val', 'test'):
        img_dir = osp.join(data_root, 'img_dir', split)
        ann_dir = osp.join(data_root, 'ann_dir', split)
        if not osp.isdir(img_dir) and split == 'val':
            continue
        for folder in (img_dir, ann_dir):
            if not osp.isdir(folder):
                raise FileNotFoundError(
                    f'{folder} does not exist: the layout is img_dir/ and '
                    'ann_dir/ with train/, test/ and optionally val/')
        if split == 'train':
            layout.img_suffix = _suffix(img_dir, img_suffix)
            layout.seg_map_suffix = _suffix(ann_dir, seg_map_suffix)
        names = sorted(n[:-len(layout.img_suffix)] for n in os.listdir(img_dir)
                       if n.endswith(layout.img_suffix))
        if not names:
            raise ValueError(f'{img_dir} holds no {layout.img_suffix} images')
        labels = {
            n[:-len(layout.seg_map_suffix)]
            for n in os.listdir(ann_dir) if n.endswith(layout.seg_map_suffix)
        }
        unlabelled = [n for n in names if n not in labels]
        if unlabelled:
            raise ValueError(
                f'{len(unlabelled)} image(s) of {img_dir} have no label in '
                f'{ann_dir}, e.g. {unlabelled[0]}{layout.seg_map_suffix}')
        layout.splits[split] = names
    first = osp.join(data_root, 'img_dir', 'train',
                     layout.splits['train'][0] + layout.img_suffix)
    img = cv2.imread(first, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f'{first} cannot be read as an image')
    layout.image_size = tuple(img.shape[:2])
    return layout


def folder_dataset(layout: FolderLayout,
                   split: str,
                   pipeline: Sequence[dict],
                   ann_file: Optional[str] = None) -> dict:
    """A ``BaseSegDataset`` config of one split.

    Args:
        layout (FolderLayout): From :func:`inspect_folder`.
        split (str): 'train', 'val' or 'test'.
        pipeline (list[dict]): Its transforms.
        ann_file (str, optional): Absolute path of a file naming the samples
            to use, one a line (:func:`write_split_file`), e.g. a fold.
            None: every sample of the split.

    Returns:
        dict: The dataset config.
    """
    if split not in layout.splits:
        raise ValueError(f'split {split!r} is not in {layout.data_root} '
                         f'(found {sorted(layout.splits)})')
    cfg = dict(
        type='BaseSegDataset',
        data_root=layout.data_root,
        metainfo=dict(classes=tuple(layout.classes)),
        img_suffix=layout.img_suffix,
        seg_map_suffix=layout.seg_map_suffix,
        reduce_zero_label=False,
        data_prefix=dict(
            img_path=f'img_dir/{split}', seg_map_path=f'ann_dir/{split}'),
        pipeline=list(pipeline))
    if ann_file is not None:
        cfg['ann_file'] = ann_file
    return cfg


def write_split_file(path: str, names: Sequence[str]) -> str:
    """Write sample names one a line (an MMSeg ``ann_file``)."""
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'w') as f:
        f.write(''.join(f'{n}\n' for n in names))
    return path
