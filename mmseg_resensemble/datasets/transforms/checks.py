# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""Refuse malformed images and label maps with the file's name."""
from typing import Optional

import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS

__all__ = ['CheckImageAndLabel']


@TRANSFORMS.register_module()
class CheckImageAndLabel(BaseTransform):
    """Check a loaded image and its label map; raise ``ValueError`` naming
    the file.

    Place it right after ``LoadAnnotations``. The label map must have the
    size of its image as loaded (``ori_shape``), or, if the image was
    resized before, its current size: MMSeg's test pipelines resize the
    image before ``LoadAnnotations`` loads the label map at the original
    size. It catches, with the file's path in the message, what
    otherwise fails later without one or not at all:

    * an image with another number of channels than ``num_channels`` (the
      length of the data preprocessor's ``mean``): a grayscale or RGBA
      file loaded with ``color_type='unchanged'``, a 16-bit or
      multispectral TIFF. ``LoadImageFromFile``'s default
      ``color_type='color'`` converts grayscale and RGBA files to 3 BGR
      channels, so those pass;
    * a label map that is not one channel of class indices (e.g. a
      colour-coded mask saved as RGB);
    * a label map whose height and width differ from its image's: MMSeg
      would resize the predictions to the label and train on misaligned
      pixels without a word;
    * with ``num_classes``, label values that are neither a class index
      (0 .. num_classes - 1) nor ``ignore_index``.

    Required Keys:

    - img
    - img_path
    - gt_seg_map (optional: without it only the image is checked)
    - seg_map_path (optional, for the message)
    - ori_shape (optional: defaults to the image's size)

    Args:
        num_channels (int, optional): The image's expected channels; None
            skips the check. Defaults to 3.
        num_classes (int, optional): Check the label values against it;
            None skips that check (it costs an ``np.unique`` per image).
            Defaults to None.
        ignore_index (int): The label of ignored pixels. Defaults to 255.
    """

    def __init__(self,
                 num_channels: Optional[int] = 3,
                 num_classes: Optional[int] = None,
                 ignore_index: int = 255) -> None:
        if num_channels is not None and (not isinstance(num_channels, int)
                                         or num_channels < 1):
            raise ValueError('num_channels must be an int >= 1 or None, got '
                             f'{num_channels!r}')
        if num_classes is not None and (not isinstance(num_classes, int)
                                        or num_classes < 1):
            raise ValueError('num_classes must be an int >= 1 or None, got '
                             f'{num_classes!r}')
        self.num_channels = num_channels
        self.num_classes = num_classes
        self.ignore_index = ignore_index

    def transform(self, results: dict) -> dict:
        """Check ``results``; return it unchanged.

        Raises:
            ValueError: Naming the image or label file and what is wrong.
        """
        img = results['img']
        img_path = results.get('img_path')
        if img.ndim not in (2, 3):
            raise ValueError(f'image {img_path}: expected an (H, W) or '
                             f'(H, W, C) array, got shape {img.shape}')
        channels = 1 if img.ndim == 2 else img.shape[2]
        if self.num_channels is not None and channels != self.num_channels:
            raise ValueError(
                f'image {img_path} has {channels} channel(s), expected '
                f'num_channels={self.num_channels} (as many as the data '
                "preprocessor's mean). LoadImageFromFile's "
                "color_type='color' converts grayscale and RGBA files to 3 "
                'channels')
        if 'gt_seg_map' not in results:
            return results
        label = results['gt_seg_map']
        seg_path = results.get('seg_map_path')
        if label.ndim != 2:
            raise ValueError(
                f'label map {seg_path} has shape {label.shape}: expected one '
                'channel of class indices, (H, W) (a colour-coded mask '
                'saved as RGB must be converted to indices)')
        # the image as loaded (ori_shape), or as resized with its label
        sizes = [tuple(results.get('ori_shape', img.shape[:2]))[:2]]
        if tuple(img.shape[:2]) != sizes[0]:
            sizes.append(tuple(img.shape[:2]))
        if tuple(label.shape) not in sizes:
            raise ValueError(
                f'label map {seg_path} is {label.shape[0]}x{label.shape[1]} '
                f'(HxW), its image {img_path} is ' +
                ' or '.join(f'{h}x{w}' for h, w in sizes))
        if self.num_classes is not None:
            values = np.unique(label)
            bad = values[(values >= self.num_classes)
                         & (values != self.ignore_index)]
            bad = np.concatenate([values[values < 0], bad])
            if bad.size:
                raise ValueError(
                    f'label map {seg_path} has values {bad.tolist()[:10]} '
                    f'that are neither a class (0..{self.num_classes - 1}) '
                    f'nor ignore_index={self.ignore_index}: fix that file, '
                    'or ignore_index, or reduce_zero_label=True in '
                    'LoadAnnotations for labels that start at 1')
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(num_channels={self.num_channels}'
                f', num_classes={self.num_classes}, '
                f'ignore_index={self.ignore_index})')
