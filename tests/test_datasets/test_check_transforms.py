# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""CheckImageAndLabel on small files written with cv2."""
import cv2
import numpy as np
import pytest
from mmengine.dataset import Compose

from mmseg_resensemble.datasets.transforms.checks import CheckImageAndLabel

H, W = 12, 16


def write_image(path, channels):
    rng = np.random.default_rng(0)
    shape = (H, W) if channels == 1 else (H, W, channels)
    cv2.imwrite(str(path), rng.integers(0, 256, shape, dtype=np.uint8))
    return str(path)


def write_label(path, shape=(H, W), values=(0, 1, 2, 255)):
    label = np.resize(np.array(values, np.uint8), shape)
    cv2.imwrite(str(path), label)
    return str(path)


def run(img_path, seg_path, load_image=dict(), check=dict(), resize=False):
    steps = [dict(type='LoadImageFromFile', **load_image)]
    if resize:  # as MMSeg's test pipelines: Resize, then LoadAnnotations
        steps.append(dict(type='Resize', scale=(W // 2, H // 2)))
    steps += [
        dict(type='LoadAnnotations'),
        dict(type='CheckImageAndLabel', **check)
    ]
    return Compose(steps)(
        dict(
            img_path=img_path,
            seg_map_path=seg_path,
            reduce_zero_label=False,
            seg_fields=[]))


def test_good_files_pass(tmp_path):
    img = write_image(tmp_path / 'img.png', 3)
    seg = write_label(tmp_path / 'seg.png')
    results = run(img, seg, check=dict(num_classes=3))
    assert results['img'].shape == (H, W, 3)
    # resized image, label at the original size: MMSeg's test pipelines
    results = run(img, seg, resize=True)
    assert results['img'].shape[:2] == (H // 2, W // 2)
    assert results['gt_seg_map'].shape == (H, W)


@pytest.mark.parametrize('channels', [1, 4])
def test_image_channels(tmp_path, channels):
    img = write_image(tmp_path / f'img{channels}.png', channels)
    seg = write_label(tmp_path / 'seg.png')
    # loaded as stored: grayscale has 1 channel, RGBA 4
    with pytest.raises(ValueError) as info:
        run(img, seg, load_image=dict(color_type='unchanged'))
    assert f'image {img} has {channels} channel(s)' in str(info.value)
    assert 'num_channels=3' in str(info.value)
    # LoadImageFromFile's default color_type='color' converts to 3
    assert run(img, seg)['img'].shape == (H, W, 3)
    # a pipeline that expects them
    run(img,
        seg,
        load_image=dict(color_type='unchanged'),
        check=dict(num_channels=channels))
    run(img,
        seg,
        load_image=dict(color_type='unchanged'),
        check=dict(num_channels=None))


def test_label_size_must_match_its_image(tmp_path):
    img = write_image(tmp_path / 'img.png', 3)
    seg = write_label(tmp_path / 'seg.png', shape=(H, W + 1))
    with pytest.raises(ValueError) as info:
        run(img, seg)
    assert str(info.value) == (
        f'label map {seg} is {H}x{W + 1} (HxW), its image {img} is {H}x{W}')
    with pytest.raises(ValueError, match=f'is {H}x{W} or {H // 2}x{W // 2}'):
        run(img, seg, resize=True)


def test_label_must_be_one_channel(tmp_path):
    img = write_image(tmp_path / 'img.png', 3)
    seg = write_image(tmp_path / 'seg_rgb.png', 3)  # a colour-coded mask
    with pytest.raises(
            ValueError, match=f'label map {seg} has shape \\({H}, {W}, 3\\)'):
        run(img, seg)


def test_label_values(tmp_path):
    img = write_image(tmp_path / 'img.png', 3)
    seg = write_label(tmp_path / 'seg.png', values=(0, 1, 5, 7, 255))
    with pytest.raises(ValueError) as info:
        run(img, seg, check=dict(num_classes=5))
    assert str(info.value) == (
        f'label map {seg} has values [5, 7] that are neither a class (0..4) '
        'nor ignore_index=255: fix that file, or ignore_index, or '
        'reduce_zero_label=True in LoadAnnotations for labels that start at 1')
    run(img, seg, check=dict(num_classes=8))
    run(img, seg)  # num_classes=None: no value check
    with pytest.raises(ValueError, match='ignore_index=7'):
        run(img, seg, check=dict(num_classes=6, ignore_index=7))


def test_arguments():
    for kwargs, key in ((dict(num_channels=0), 'num_channels'),
                        (dict(num_classes=1.5), 'num_classes')):
        with pytest.raises(ValueError, match=key):
            CheckImageAndLabel(**kwargs)
    assert 'num_classes=4' in repr(CheckImageAndLabel(num_classes=4))
    # an image alone (no annotation loaded) is checked too
    out = CheckImageAndLabel()(
        dict(img=np.zeros((2, 2, 3), np.uint8), img_path='a.png'))
    assert out['img'].shape == (2, 2, 3)
    with pytest.raises(ValueError, match=r'image b.png: expected an \(H, W\)'):
        CheckImageAndLabel()(
            dict(img=np.zeros((2, 2, 3, 1)), img_path='b.png'))
