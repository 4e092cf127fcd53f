# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""Load the cached E2E output of a training image into the pipeline."""
from typing import List, Optional

import cv2
import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS

from .store import E2ECacheStore

__all__ = [
    'LoadE2ECache', 'e2e_field_keys', 'E2E_KEYS_FIELD', 'E2E_PROBS_KEY',
    'MAX_CHANNELS_PER_FIELD'
]

# OpenCV 5 converts arrays of at most 128 channels (OpenCV 4: 512); the
# resize, crop and flip of MMSeg's transforms go through it
MAX_CHANNELS_PER_FIELD = 128
E2E_PROBS_KEY = 'e2e_probs'
E2E_KEYS_FIELD = 'e2e_prob_keys'


def e2e_field_keys(num_classes: int) -> List[str]:
    """The result keys that hold the K channels of the cached map."""
    chunks = -(-num_classes // MAX_CHANNELS_PER_FIELD)
    if chunks == 1:
        return [E2E_PROBS_KEY]
    return [f'{E2E_PROBS_KEY}_{i}' for i in range(chunks)]


@TRANSFORMS.register_module()
class LoadE2ECache(BaseTransform):
    """Load x̂0 = E2E(I0) of a training image from the E2E cache.

    Place it right after ``LoadAnnotations``, before any geometric
    transform. The cached probabilities (stored at the resolution of the
    finest E2E feature level) are upsampled bilinearly to the loaded image
    and added as a *segmentation field*: MMSeg's ``Resize``/``RandomResize``,
    ``RandomCrop`` and ``RandomFlip`` then transform them exactly as
    ``gt_seg_map`` (nearest resizing, same crop box, same flip), and
    :class:`PackResEnsembleInputs` packs them as ``data_sample.e2e_probs``.

    In the pipeline the map is uint8 (H, W, K), q / 255 ≈ p: the
    representation every seg-field transform handles (OpenCV resizes
    uint8 with any channel count up to 128), 4x smaller than float32.
    More than 128 classes are split over several fields of at most 128
    channels (``e2e_probs_0``, ``e2e_probs_1``, ...).

    Required Keys:

    - img
    - img_path
    - seg_fields

    Added Keys:

    - e2e_probs (np.uint8, (H, W, K)), or ``e2e_probs_i`` for K > 128
    - e2e_prob_keys (list[str]): those keys, in channel order

    Modified Keys:

    - seg_fields

    Args:
        cache_dir (str): The cache directory, the ``cache_dir`` of the
            ``E2ECacheHook`` that builds it (one variable of the config).
    """

    def __init__(self, cache_dir: str) -> None:
        super().__init__()
        if not isinstance(cache_dir, str) or not cache_dir:
            raise ValueError(
                'cache_dir must be a non-empty str (the cache_dir of the '
                f'E2ECacheHook), got {cache_dir!r}')
        self.cache_dir = cache_dir
        self._store: Optional[E2ECacheStore] = None

    @property
    def store(self) -> E2ECacheStore:
        """The cache this transform reads."""
        if self._store is None:
            self._store = E2ECacheStore(self.cache_dir)
        return self._store

    def transform(self, results: dict) -> dict:
        """Add the cached E2E probabilities as segmentation fields.

        Args:
            results (dict): With ``img`` (H, W, 3) at its loaded size.

        Returns:
            dict: With ``e2e_probs`` uint8 (H, W, K) (or its chunks) in
            ``seg_fields``.
        """
        img = results['img']
        h, w = img.shape[:2]
        ori_shape = tuple(results.get('ori_shape', (h, w))[:2])
        if ('scale_factor' in results or 'flip' in results
                or ori_shape != (h, w)):
            raise ValueError(
                'LoadE2ECache must come before any geometric transform '
                '(right after LoadAnnotations): the image of '
                f'{results.get("img_path")} is {h}x{w} but was loaded as '
                f'{ori_shape[0]}x{ori_shape[1]}')
        store = self.store
        meta = store.cached_meta()
        key = store.key_for(results['img_path'], meta['key_root'])
        probs, _ = store.read_entry(key, meta=meta)
        keys = e2e_field_keys(probs.shape[-1])
        chunks = np.array_split(probs, len(keys), axis=-1)
        seg_fields = results.setdefault('seg_fields', [])
        for name, chunk in zip(keys, chunks):
            if chunk.shape[:2] != (h, w):
                chunk = cv2.resize(
                    np.ascontiguousarray(chunk), (w, h),
                    interpolation=cv2.INTER_LINEAR)
            results[name] = chunk
            if name not in seg_fields:
                seg_fields.append(name)
        results[E2E_KEYS_FIELD] = keys
        return results

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(cache_dir={self.cache_dir!r})'
