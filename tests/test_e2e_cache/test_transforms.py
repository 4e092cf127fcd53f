# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""LoadE2ECache: the cached E2E maps through the training pipeline."""
import os
import os.path as osp
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.dataset import Compose

from mmseg_resensemble.datasets import generate_shapes_dataset
from mmseg_resensemble.datasets.transforms import PackResEnsembleInputs
from mmseg_resensemble.e2e_cache import E2ECacheError, LoadE2ECache
from tests.test_e2e_cache.helpers import make_cache

H, W = 40, 56
NUM_SHAPE_CLASSES = 5


@pytest.fixture(scope='module')
def shapes_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('shapes'))
    return generate_shapes_dataset(root, splits=dict(train=3), size=(H, W))


def image_paths(root):
    folder = osp.join(root, 'img_dir', 'train')
    return [osp.join(folder, n) for n in sorted(os.listdir(folder))]


def read_label(root, img_path):
    import cv2
    ann = img_path.replace(osp.join('img_dir', ''), osp.join('ann_dir', ''))
    return cv2.imread(ann, cv2.IMREAD_UNCHANGED)


def onehot_probs(label, num_classes):
    """One-hot (K, H, W) of ``label``; uniform where it is 255."""
    label = torch.from_numpy(label.astype(np.int64))
    valid = label < num_classes
    probs = F.one_hot(label.clamp(max=num_classes - 1), num_classes)
    probs = probs.permute(2, 0, 1).float()
    return torch.where(valid, probs, torch.full_like(probs, 1 / num_classes))


def train_pipeline(cache_dir, crop=(24, 32)):
    return Compose([
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations'),
        dict(type='LoadE2ECache', cache_dir=str(cache_dir)),
        dict(
            type='RandomResize',
            scale=(W, H),
            ratio_range=(0.5, 2.0),
            keep_ratio=True),
        dict(type='RandomCrop', crop_size=crop, cat_max_ratio=0.75),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PhotoMetricDistortion'),
        dict(type='PackResEnsembleInputs')
    ])


def data_info(img_path):
    return dict(
        img_path=img_path,
        seg_map_path=img_path.replace(
            osp.join('img_dir', ''), osp.join('ann_dir', '')),
        reduce_zero_label=False,
        seg_fields=[])


@pytest.mark.parametrize('num_classes', [NUM_SHAPE_CLASSES, 150])
def test_cached_map_stays_aligned_with_ground_truth(tmp_path, shapes_root,
                                                    num_classes):
    """A cache map that is the one-hot of the ground truth stays the
    one-hot of the resized, cropped and flipped ground truth (150 classes:
    the map is split over two seg fields, as OpenCV takes <= 128
    channels)."""
    paths = image_paths(shapes_root)
    entries = {
        p: onehot_probs(read_label(shapes_root, p), num_classes)
        for p in paths
    }
    make_cache(tmp_path / 'cache', entries, shapes_root, num_classes)
    pipeline = train_pipeline(tmp_path / 'cache')
    flips, scales = set(), set()
    for seed in range(6 if num_classes < 128 else 2):
        np.random.seed(seed)
        random.seed(seed)
        out = pipeline(data_info(paths[seed % len(paths)]))
        ds = out['data_samples']
        gt = ds.gt_sem_seg.data[0]
        probs = ds.e2e_probs.data
        assert probs.dtype == torch.float32
        assert probs.shape == (num_classes, *out['inputs'].shape[-2:])
        assert tuple(probs.shape[-2:]) == tuple(ds.img_shape)
        valid = gt != 255
        expected = F.one_hot(gt.clamp(max=num_classes - 1),
                             num_classes).permute(2, 0, 1).float()
        assert torch.equal(probs[:, valid], expected[:, valid])
        torch.testing.assert_close(
            probs[:, ~valid],
            torch.full_like(probs[:, ~valid], 1 / num_classes),
            atol=1 / 255,
            rtol=0)
        flips.add(ds.flip)
        scales.add(tuple(np.round(ds.scale_factor, 3)))
    if num_classes < 128:  # the augmentations did happen
        assert flips == {True, False}
        assert len(scales) > 1


def test_low_resolution_map_is_upsampled_to_the_image(tmp_path, shapes_root):
    """An entry at the decoder's resolution (1/4 here) covers the image:
    class 0 on the left third, class 1 elsewhere stays so, not transposed
    or flipped, and every pixel is a distribution."""
    img_path = image_paths(shapes_root)[0]
    h, w = H // 4, W // 4
    probs = torch.zeros(3, h, w)
    probs[0, :, :w // 3] = 1
    probs[1, :, w // 3:] = 1
    make_cache(tmp_path / 'cache', {img_path: probs}, shapes_root, 3)
    pipeline = Compose([
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations'),
        dict(type='LoadE2ECache', cache_dir=str(tmp_path / 'cache'))
    ])
    results = pipeline(data_info(img_path))
    up = results['e2e_probs']
    assert up.dtype == np.uint8 and up.shape == (H, W, 3)
    assert results['seg_fields'] == ['gt_seg_map', 'e2e_probs']
    assert results['e2e_prob_keys'] == ['e2e_probs']
    sums = up.astype(np.int64).sum(-1)
    assert np.abs(sums - 255).max() <= 1
    edge = W // 3  # the boundary column at full resolution, about
    assert (up[:, :edge - 3].argmax(-1) == 0).all()
    assert (up[:, edge + 3:].argmax(-1) == 1).all()
    assert (up[..., 2] == 0).all()
    row = up[0, :, 0].astype(int)
    assert (np.diff(row) <= 0).all()  # class 0 on the left, fading out
    assert ((row > 0) & (row < 255)).any()  # bilinear: a ramp, not a step


def test_transform_reports_the_bad_file(tmp_path, shapes_root):
    img_path = image_paths(shapes_root)[0]
    store, _ = make_cache(tmp_path / 'cache',
                          {img_path: torch.full(
                              (5, 10, 14), 0.2)}, shapes_root, 5)
    path = store.entry_path(store.key_for(img_path, shapes_root))
    with open(path, 'r+b') as f:
        f.truncate(100)
    pipeline = Compose([
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations'),
        dict(type='LoadE2ECache', cache_dir=str(tmp_path / 'cache'))
    ])
    with pytest.raises(E2ECacheError) as e:
        pipeline(data_info(img_path))
    assert path in str(e.value)
    with pytest.raises(E2ECacheError, match='missing'):
        pipeline(data_info(image_paths(shapes_root)[1]))


def test_transform_misuse(tmp_path, shapes_root):
    img_path = image_paths(shapes_root)[0]
    make_cache(tmp_path / 'cache', {img_path: torch.full((5, 10, 14), 0.2)},
               shapes_root, 5)
    late = Compose([
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations'),
        dict(type='Resize', scale=(28, 20), keep_ratio=True),
        dict(type='LoadE2ECache', cache_dir=str(tmp_path / 'cache'))
    ])
    with pytest.raises(ValueError, match='before any geometric transform'):
        late(data_info(img_path))
    # the directory is explicit (the E2ECacheHook's): no default
    for bad in (None, ''):
        with pytest.raises(ValueError, match='cache_dir must be a non-empty'):
            LoadE2ECache(cache_dir=bad)


def test_pack_without_cache_is_pack_seg_inputs(shapes_root):
    from mmseg.datasets.transforms import PackSegInputs
    results = Compose(
        [dict(type='LoadImageFromFile'),
         dict(type='LoadAnnotations')])(
             data_info(image_paths(shapes_root)[0]))
    ours = PackResEnsembleInputs()(dict(results))
    theirs = PackSegInputs()(dict(results))
    assert 'e2e_probs' not in ours['data_samples']
    assert torch.equal(ours['inputs'], theirs['inputs'])
    assert torch.equal(ours['data_samples'].gt_sem_seg.data,
                       theirs['data_samples'].gt_sem_seg.data)


def test_pack_rejects_label_swapping_flip(tmp_path, shapes_root):
    img_path = image_paths(shapes_root)[0]
    make_cache(tmp_path / 'cache', {img_path: torch.full((5, 10, 14), 0.2)},
               shapes_root, 5)
    pipeline = Compose([
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations'),
        dict(type='LoadE2ECache', cache_dir=str(tmp_path / 'cache')),
        dict(type='RandomFlip', prob=1.0, swap_seg_labels=[(1, 2)]),
        dict(type='PackResEnsembleInputs')
    ])
    with pytest.raises(ValueError, match='swap_seg_labels'):
        pipeline(data_info(img_path))
