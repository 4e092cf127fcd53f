# Copyright (c) mmseg-resensemble contributors. All rights reserved.
import os
import os.path as osp

import cv2
import numpy as np
import pytest
from mmseg.registry import DATASETS

import mmseg_resensemble.datasets.camvid  # noqa: F401  (registers it)
from mmseg_resensemble.datasets.camvid import CamVidDataset

SHARED_CAMVID = osp.join(
    osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), '..',
    'shared', 'data', 'camvid')
PIPELINE = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs')
]


def write_fake_camvid(root, splits=dict(train=3, val=2, test=1)):
    """A CamVid-shaped folder: 360x480 images, labels 0..10 and 255."""
    rng = np.random.default_rng(0)
    for split, n in splits.items():
        for i in range(n):
            img = rng.integers(0, 256, (360, 480, 3), dtype=np.uint8)
            label = rng.integers(0, 11, (360, 480)).astype(np.uint8)
            label[:20] = 255
            for sub, arr in (('img_dir', img), ('ann_dir', label)):
                folder = osp.join(root, sub, split)
                os.makedirs(folder, exist_ok=True)
                assert cv2.imwrite(
                    osp.join(folder, f'0001TP_{i:06d}.png'), arr)


def build(root, split, **kwargs):
    return DATASETS.build(
        dict(
            type='CamVidDataset',
            data_root=str(root),
            data_prefix=dict(
                img_path=f'img_dir/{split}', seg_map_path=f'ann_dir/{split}'),
            pipeline=PIPELINE,
            **kwargs))


def test_metainfo():
    meta = CamVidDataset.METAINFO
    assert meta['classes'] == ('Sky', 'Building', 'Pole', 'Road', 'Pavement',
                               'Tree', 'SignSymbol', 'Fence', 'Car',
                               'Pedestrian', 'Bicyclist')
    assert len(meta['palette']) == 11
    assert meta['palette'][0] == [128, 128, 128]  # Sky
    assert meta['palette'][3] == [128, 64, 128]  # Road
    assert meta['palette'][10] == [0, 128, 192]  # Bicyclist
    assert len({tuple(c) for c in meta['palette']}) == 11


def test_fake_layout_loads(tmp_path):
    write_fake_camvid(tmp_path)
    lengths = {s: len(build(tmp_path, s)) for s in ('train', 'val', 'test')}
    assert lengths == dict(train=3, val=2, test=1)
    dataset = build(tmp_path, 'train')
    assert dataset.ignore_index == 255
    assert dataset.metainfo['classes'] == CamVidDataset.METAINFO['classes']
    info = dataset.get_data_info(0)
    assert osp.basename(info['img_path']) == osp.basename(info['seg_map_path'])
    assert info['reduce_zero_label'] is False
    sample = dataset[0]
    gt = sample['data_samples'].gt_sem_seg.data.numpy()
    label = cv2.imread(info['seg_map_path'], cv2.IMREAD_UNCHANGED)
    # labels pass through unchanged: Sky (0) kept, void stays 255
    np.testing.assert_array_equal(gt[0], label)
    assert set(np.unique(gt)) == set(range(11)) | {255}
    assert tuple(sample['inputs'].shape) == (3, 360, 480)


def test_class_subset_remaps_labels(tmp_path):
    write_fake_camvid(tmp_path, dict(train=1))
    dataset = build(tmp_path, 'train', metainfo=dict(classes=('Road', 'Car')))
    # MMSeg's label_map: Road 3 -> 0, Car 8 -> 1, the rest -> 255
    assert dataset.label_map[3] == 0 and dataset.label_map[8] == 1
    assert dataset.label_map[0] == 255
    gt = dataset[0]['data_samples'].gt_sem_seg.data
    assert set(gt.unique().tolist()) == {0, 1, 255}


def test_reduce_zero_label_raises(tmp_path):
    write_fake_camvid(tmp_path, dict(train=1))
    with pytest.raises(ValueError, match='reduce_zero_label=True'):
        build(tmp_path, 'train', reduce_zero_label=True)


def test_shared_camvid_matches():
    """The shared copy: class order of classes.txt and split sizes."""
    if not osp.isdir(SHARED_CAMVID):
        pytest.skip('../shared/data/camvid is not here; the fake layout '
                    'tests above cover the loader')
    with open(osp.join(SHARED_CAMVID, 'classes.txt')) as f:
        names = [
            line.strip() for line in f
            if line.strip() and not line.startswith('#')
        ]
    assert tuple(names) == CamVidDataset.METAINFO['classes']
    sizes = {s: len(build(SHARED_CAMVID, s)) for s in ('train', 'val', 'test')}
    assert sizes == dict(train=367, val=101, test=233)
    sample = build(SHARED_CAMVID, 'val')[0]
    gt = sample['data_samples'].gt_sem_seg.data
    assert gt.shape[-2:] == (360, 480)
    assert set(gt.unique().tolist()) <= set(range(11)) | {255}
