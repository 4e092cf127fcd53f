# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""E2ECacheStore: the entries' encoding, and errors that name the bad
file."""
import os
import os.path as osp

import numpy as np
import pytest
import torch

from mmseg_resensemble.e2e_cache import (E2ECacheError, E2ECacheStore,
                                         decode_entry, encode_probs)
from tests.test_e2e_cache.helpers import make_cache


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
