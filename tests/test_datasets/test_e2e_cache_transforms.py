# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""The E2E cache's store and the transforms that read it in training."""
import os
import os.path as osp
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.dataset import Compose

from mmseg_resensemble.datasets import (E2ECacheError, E2ECacheStore,
                                        generate_shapes_dataset)
from mmseg_resensemble.datasets.e2e_cache_store import (decode_entry,
                                                        encode_probs)
from mmseg_resensemble.datasets.transforms import (LoadE2ECache,
                                                   PackResEnsembleInputs)

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


def make_cache(cache_dir,
               entries,
               key_root,
               num_classes,
               topk=None,
               compress=True,
               digest='0' * 64):
    store = E2ECacheStore(str(cache_dir))
    meta = store.write_meta(
        digest=digest,
        fingerprint=dict(test=True),
        num_classes=num_classes,
        topk=topk,
        key_root=key_root)
    for img_path, probs in entries.items():
        store.write_entry(
            store.key_for(img_path, key_root),
            probs,
            meta=meta,
            compress=compress)
    return store, meta


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


@pytest.mark.parametrize('num_classes,topk', [(20, 3), (300, 5)])
def test_topk_round_trip(tmp_path, num_classes, topk):
    g = torch.Generator().manual_seed(0)
    probs = (3 * torch.randn(num_classes, 6, 8, generator=g)).softmax(0)
    arrays = encode_probs(probs, topk=topk)
    assert arrays['topk_index'].dtype == (
        np.uint8 if num_classes <= 256 else np.uint16)
    assert arrays['topk_prob'].shape == (6, 8, topk)
    dense = decode_entry(arrays, num_classes).astype(np.float32) / 255
    assert dense.shape == (6, 8, num_classes)
    ref = probs.permute(1, 2, 0).numpy()
    values, index = probs.topk(topk, dim=0)
    top = np.take_along_axis(dense, index.permute(1, 2, 0).numpy(), -1)
    np.testing.assert_allclose(
        top, values.permute(1, 2, 0).numpy(), atol=0.5 / 255)
    rest = (1 - values.sum(0)) / (num_classes - topk)
    mask = np.ones_like(dense, dtype=bool)
    np.put_along_axis(mask, index.permute(1, 2, 0).numpy(), False, -1)
    np.testing.assert_allclose(
        dense[mask].reshape(6, 8, -1),
        np.broadcast_to(rest.numpy()[..., None], (6, 8, num_classes - topk)),
        # the rounding of the top-k values spreads into the rest
        atol=(0.5 + 0.5 * topk / (num_classes - topk)) / 255 + 1e-6)
    assert np.abs(dense - ref).max() < 1  # same object, not garbage
    # and through the store
    store, meta = make_cache(tmp_path / 'c', {}, str(tmp_path), num_classes,
                             topk)
    store.write_entry('a.png', probs, meta=meta)
    read, header = store.read_entry('a.png', meta=meta)
    np.testing.assert_array_equal(read, decode_entry(arrays, num_classes))
    assert header['shape'] == [6, 8] and header['topk'] == topk
    # validating without decoding gives the same header
    assert store.check_entry('a.png', meta=meta) == header


def test_dense_entry_is_quantised_probabilities(tmp_path):
    g = torch.Generator().manual_seed(1)
    probs = torch.randn(11, 5, 7, generator=g).softmax(0)
    store, meta = make_cache(tmp_path / 'c', {}, str(tmp_path), 11)
    path = store.write_entry('x/y.png', probs, meta=meta, compress=False)
    assert osp.basename(path).startswith('x_y.png-')
    read, _ = store.read_entry('x/y.png', meta=meta)
    assert read.dtype == np.uint8 and read.shape == (5, 7, 11)
    np.testing.assert_allclose(
        read / 255., probs.permute(1, 2, 0).numpy(), atol=0.5 / 255 + 1e-7)
    # uncompressed: exactly the array bytes plus the zip/npy overhead
    assert osp.getsize(path) < read.nbytes + 2048
    assert not [n for n in os.listdir(store.entries_dir) if '.tmp' in n]


# ----------------------------------------------------------------------
# a bad cache gives an error that names the file
# ----------------------------------------------------------------------
@pytest.fixture
def one_entry(tmp_path):
    g = torch.Generator().manual_seed(2)
    probs = torch.randn(4, 8, 8, generator=g).softmax(0)
    store, meta = make_cache(tmp_path / 'cache', {}, str(tmp_path), 4)
    store.write_entry('img.png', probs, meta=meta)
    return store, meta, store.entry_path('img.png')


def test_missing_meta_and_entry(tmp_path, one_entry):
    with pytest.raises(E2ECacheError, match='meta.json does not exist'):
        E2ECacheStore(str(tmp_path / 'nowhere')).read_meta()
    store, meta, _ = one_entry
    with pytest.raises(E2ECacheError) as e:
        store.read_entry('other.png', meta=meta)
    assert store.entry_path('other.png') in str(e.value)
    assert 'missing' in str(e.value)


@pytest.mark.parametrize('compress', [True, False])
@pytest.mark.parametrize('damage', ['truncate', 'garbage', 'empty'])
def test_truncated_or_corrupt_entry(tmp_path, compress, damage):
    g = torch.Generator().manual_seed(3)
    probs = torch.randn(4, 16, 16, generator=g).softmax(0)
    store, meta = make_cache(tmp_path / 'cache', {}, str(tmp_path), 4)
    path = store.write_entry('img.png', probs, meta=meta, compress=compress)
    data = bytearray(open(path, 'rb').read())
    if damage == 'truncate':
        data = data[:len(data) // 2]
    elif damage == 'garbage':  # overwrite the middle (the array data)
        mid = len(data) // 2
        data[mid - 100:mid + 100] = os.urandom(200)
    else:
        data = b''
    with open(path, 'wb') as f:
        f.write(bytes(data))
    for read in (store.read_entry, store.check_entry):
        with pytest.raises(E2ECacheError) as e:
            read('img.png', meta=meta)
        assert path in str(e.value)


def test_stale_wrong_classes_wrong_dtype_entries(tmp_path, one_entry):
    store, meta, path = one_entry
    stale = dict(meta, digest='1' * 64)
    with pytest.raises(E2ECacheError, match='another fingerprint') as e:
        store.read_entry('img.png', meta=stale)
    assert path in str(e.value)
    with pytest.raises(E2ECacheError, match='4 classes') as e:
        store.read_entry('img.png', meta=dict(meta, num_classes=5))
    assert path in str(e.value)
    # an entry under another image's name
    os.replace(path, store.entry_path('b.png'))
    with pytest.raises(E2ECacheError, match="holds image 'img.png'"):
        store.read_entry('b.png', meta=meta)
    # float probabilities, a valid header otherwise
    with np.load(store.entry_path('b.png')) as npz:
        header = str(npz['header']).replace('img.png', 'b.png')
    np.savez(
        store.entry_path('b.png'),
        header=np.array(header),
        probs=np.full((8, 8, 4), 0.25, np.float32))
    with pytest.raises(E2ECacheError, match='float32') as e:
        store.read_entry('b.png', meta=meta)
    assert store.entry_path('b.png') in str(e.value)
    # uint8 values that are no distribution
    np.savez(
        store.entry_path('b.png'),
        header=np.array(header),
        probs=np.full((8, 8, 4), 200, np.uint8))
    with pytest.raises(E2ECacheError, match='do not sum to 1'):
        store.read_entry('b.png', meta=meta)
    with pytest.raises(E2ECacheError, match='outside the E2E cache key root'):
        store.key_for('/elsewhere/x.png', str(tmp_path))


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
