# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""The fingerprint of the E2E cache: what it covers, and digests that stay
the same (a changed digest makes every cache built before stale)."""
import numpy as np
import torch
import torch.nn as nn

from mmseg_resensemble.e2e_cache import E2ECacheBuilder
from mmseg_resensemble.e2e_cache import fingerprint as fp
from tests.test_e2e_cache.helpers import (TEST_PIPELINE, K, build, counts,
                                          runner_cfg)
from tests.tiny_models import fcn_e2e

FIELDS = dict(
    storage=dict(
        dtype='uint8',
        layout='hwc',
        topk=None,
        resolution='finest-feature-level'),
    classes=['a', 'b'],
    num_classes=2,
    test_pipeline=[dict(type='Resize', scale=(32, 24))])


class Named:

    def __str__(self):
        return 'named'


def test_canonical_json():
    obj = dict(
        b=(1, 2),
        a=np.float32(0.5),
        c=np.arange(3),
        d=torch.tensor([1., 2.]),
        e=nn.Conv2d,
        f=Named(),
        g=None,
        h='x̂0')
    assert fp.canonical_json(obj) == (
        '{"a":0.5,"b":[1,2],"c":[0,1,2],"d":[1.0,2.0],'
        '"e":"torch.nn.modules.conv.Conv2d","f":"named","g":null,'
        '"h":"x\\u03020"}')


def test_digests_are_stable():
    """The values the caches built before this code hold."""
    digest = ('fb1074e9e031ced0b73e2fb621ffbd12'
              '907ef78293cd0bf9789107495f7fb845')
    assert fp.fingerprint_digest(FIELDS) == digest
    # a round trip through JSON changes neither the fields nor the digest
    plain = fp.json_fields(**FIELDS)
    assert plain['test_pipeline'] == [dict(type='Resize', scale=[32, 24])]
    assert fp.fingerprint_digest(plain) == digest
    model = nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3))
    with torch.no_grad():
        for i, value in enumerate(model.state_dict().values()):
            if value.is_floating_point():
                value.copy_(
                    torch.arange(value.numel(), dtype=value.dtype).reshape(
                        value.shape) / (i + 1))
            else:
                value.fill_(7)
    assert fp.state_dict_sha256(model) == (
        '4e44851d1a393213f6a45cb1bc61702e37b111fa44f5e768c2099806a295eda2')


def test_file_sha256(tmp_path):
    path = tmp_path / 'f.bin'
    path.write_bytes(b'resensemble' * 1000)
    expected = ('bb6fef819f230b4df5166d971bf70335'
                '915765a8b45ea46e148cb9be1f46ac72')
    # the chunks do not change the digest
    assert fp.file_sha256(str(path)) == expected
    assert fp.file_sha256(str(path), chunk_size=1000) == expected


def test_without_weight_sources():
    cfg = dict(
        type='E',
        init_cfg=dict(type='P'),
        backbone=dict(pretrained='x', depth=1, init_cfg=None),
        heads=[dict(init_cfg=1, k=2)],
        t=(dict(pretrained=1, a=1), ))
    assert fp.without_weight_sources(cfg) == dict(
        type='E', backbone=dict(depth=1), heads=[dict(k=2)], t=(dict(a=1), ))


def test_architecture_and_changed_fields():
    model = nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3))
    arch = fp.architecture(model)
    assert [a[:2] for a in arch] == [['', 'Sequential'], ['0', 'Conv2d'],
                                     ['1', 'BatchNorm2d']]
    assert arch[1][2] == model[0].extra_repr()
    new = dict(FIELDS, classes=['a', 'c'], extra=1)
    assert fp.changed_fields(FIELDS, new) == ['classes', 'extra']
    assert fp.changed_fields(FIELDS, fp.json_fields(**FIELDS)) == []


def test_out_of_fold_fields(tmp_path):
    path = tmp_path / 'fold.pth'
    path.write_bytes(b'weights')
    fields = fp.out_of_fold_fields(
        [dict(checkpoint=str(path), held_out=['b', 'a'])])
    assert fields == [
        dict(checkpoint_sha256=fp.file_sha256(str(path)), held_out=['a', 'b'])
    ]


def test_fingerprint_fields(tmp_path, data_root, ckpt):
    model, dataset = build(ckpt, data_root, str(tmp_path / 'c'))
    cfg = runner_cfg()
    cfg.model = dict(e2e=fcn_e2e(num_classes=K))
    fields = fp.fingerprint_fields(
        model, TEST_PIPELINE, ['a'] * K, K, cfg=cfg, topk=None)
    assert sorted(fields) == [
        'classes', 'data_preprocessor', 'e2e_architecture',
        'e2e_checkpoint_sha256', 'e2e_config', 'e2e_state_sha256',
        'e2e_test_cfg', 'num_classes', 'storage', 'test_pipeline'
    ]
    assert fields['e2e_checkpoint_sha256'] == fp.file_sha256(ckpt)
    assert fields['e2e_state_sha256'] == fp.state_dict_sha256(model.e2e)
    assert fields['e2e_config']['type'] == 'EncoderDecoder'
    assert fields == fp.json_fields(**fields)  # plain JSON values
    # the weights' content counts, not where they were read from
    model.e2e_checkpoint = None
    assert fp.fingerprint_fields(model, TEST_PIPELINE, ['a'] * K,
                                 K)['e2e_checkpoint_sha256'] is None


def test_moved_initial_weights_keep_the_cache(tmp_path, data_root, ckpt, logs):
    """The E2E config's ``init_cfg`` path (here: its pretrained backbone in
    another work dir) is no part of the fingerprint: the trained weights
    are, by content."""

    def e2e(work_dir):
        cfg = fcn_e2e(num_classes=K)
        cfg['backbone'] = dict(
            cfg['backbone'],
            init_cfg=dict(
                type='Pretrained', checkpoint=f'{work_dir}/backbone.pth'))
        return cfg

    def config(e2e_cfg):
        """The run's config, whose model.e2e enters the fingerprint."""
        cfg = runner_cfg()
        cfg.model = dict(e2e=e2e_cfg)
        return cfg

    cache_dir = str(tmp_path / 'cache')
    model, dataset = build(ckpt, data_root, cache_dir, e2e=e2e('/run/a'))
    E2ECacheBuilder(cache_dir).build(
        model, dataset, cfg=config(e2e('/run/a')), run=str(tmp_path))
    logs.clear()
    model, dataset = build(ckpt, data_root, cache_dir, e2e=e2e('/run/b'))
    stats = E2ECacheBuilder(cache_dir).build(
        model, dataset, cfg=config(e2e('/run/b')), run=str(tmp_path))
    assert counts(stats) == dict(images=6, reused=6, computed=0, repaired=0)
    assert not [m for m in logs if 'stale' in m]
