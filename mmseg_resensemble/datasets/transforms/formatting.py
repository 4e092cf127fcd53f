# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""Pack the cached E2E output into the data sample."""
import numpy as np
import torch
from mmengine.structures import PixelData
from mmseg.datasets.transforms import PackSegInputs
from mmseg.registry import TRANSFORMS

from ...e2e_cache.transforms import E2E_KEYS_FIELD


@TRANSFORMS.register_module()
class PackResEnsembleInputs(PackSegInputs):
    """``PackSegInputs`` that also packs the cached E2E probabilities.

    When :class:`LoadE2ECache` ran, the (transformed) uint8 map becomes
    ``data_sample.e2e_probs = PixelData(data=probs)``, probs float32
    (K, H, W) in [0, 1] at the augmented image's size, renormalised to
    sum to 1 over K (undoing the uint8 rounding).
    ``ResEnsembleSegmentor`` then takes x̂0 from it instead of running the
    E2E decode head. Without :class:`LoadE2ECache` it packs exactly as
    ``PackSegInputs``.

    Args:
        meta_keys (Sequence[str]): As ``PackSegInputs``.
    """

    def transform(self, results: dict) -> dict:
        """Pack the image, the ground truth and the cached E2E map.

        Args:
            results (dict): The pipeline's results.

        Returns:
            dict: ``inputs`` (3, H, W) and ``data_samples``.
        """
        packed = super().transform(results)
        keys = results.get(E2E_KEYS_FIELD)
        if not keys:
            return packed
        if results.get('swap_seg_labels'):
            raise ValueError(
                'RandomFlip(swap_seg_labels='
                f'{results["swap_seg_labels"]}) swaps label values, which '
                'corrupts the cached E2E probabilities; it is not supported '
                'with LoadE2ECache')
        chunks = []
        for key in keys:
            chunk = results[key]
            if chunk.ndim == 2:  # OpenCV drops a last axis of length 1
                chunk = chunk[..., None]
            chunks.append(chunk)
        probs = np.concatenate(chunks, axis=-1)
        img_hw = tuple(results['img'].shape[:2])
        if probs.shape[:2] != img_hw:
            raise ValueError(
                f'the cached E2E map of {results.get("img_path")} is '
                f'{probs.shape[0]}x{probs.shape[1]} after the pipeline, the '
                f'image {img_hw[0]}x{img_hw[1]}: a transform handles '
                '`seg_fields` differently from the image')
        data = torch.from_numpy(
            np.ascontiguousarray(probs.transpose(2, 0, 1))).float()
        data = data / data.sum(0, keepdim=True).clamp(min=1.)
        packed['data_samples'].e2e_probs = PixelData(data=data)
        return packed
