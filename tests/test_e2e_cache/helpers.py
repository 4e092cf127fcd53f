# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""What the E2E cache tests share: a tiny model and data set, and caches
written by hand."""
import copy
import os
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.dataset import Compose
from mmseg.registry import DATASETS, MODELS

from mmseg_resensemble.e2e_cache import E2ECacheStore
from tests.tiny_models import fcn_e2e, head_cfg

K = 5  # the shapes data set's classes
SIZE = (24, 32)
TEST_PIPELINE = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(32, 24), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs')
]


def counts(stats):
    """A build's counts, without the time it took."""
    assert stats['seconds'] >= 0
    return {k: v for k, v in stats.items() if k != 'seconds'}


def train_pipeline(cache_dir):
    return [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations'),
        dict(type='LoadE2ECache', cache_dir=cache_dir),
        dict(
            type='RandomResize',
            scale=(32, 24),
            ratio_range=(0.75, 1.5),
            keep_ratio=True),
        dict(type='RandomCrop', crop_size=SIZE, cat_max_ratio=0.9),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PackResEnsembleInputs')
    ]


def dataset_cfg(root, pipeline):
    return dict(
        type='SyntheticShapesDataset',
        data_root=root,
        data_prefix=dict(
            img_path='img_dir/train', seg_map_path='ann_dir/train'),
        pipeline=pipeline)


def save_e2e_checkpoint(path, seed=0):
    torch.manual_seed(seed)
    e2e = MODELS.build(fcn_e2e(num_classes=K))
    e2e.init_weights()
    # non-trivial BN statistics, so that eval mode is not the identity
    for m in e2e.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    torch.save(dict(state_dict=e2e.state_dict()), path)
    return path


def model_cfg(ckpt, e2e=None):
    return dict(
        type='ResEnsembleSegmentor',
        e2e=e2e or fcn_e2e(num_classes=K),
        e2e_checkpoint=ckpt,
        decode_head=head_cfg(num_classes=K),
        test_cfg=dict(sampler='ddim', num_steps=2))


def runner_cfg():
    """A run's config as far as the cache reads it: the test pipeline."""
    return Config(
        dict(test_dataloader=dict(dataset=dict(pipeline=TEST_PIPELINE))))


def mock_runner(work_dir, model, dataset):
    """What E2ECacheHook reads of a runner."""
    return SimpleNamespace(
        model=model,
        work_dir=str(work_dir),
        cfg=runner_cfg(),
        train_dataloader=SimpleNamespace(dataset=dataset))


def run_builder(builder, work_dir, model, dataset):
    """``builder.build`` as E2ECacheHook calls it on ``mock_runner``."""
    return builder.build(model, dataset, cfg=runner_cfg(), run=str(work_dir))


def build(ckpt, root, cache_dir, e2e=None):
    model = MODELS.build(model_cfg(ckpt, e2e))
    dataset = DATASETS.build(dataset_cfg(root, train_pipeline(cache_dir)))
    return model, dataset


def batch_for(model, img_path):
    """``img_path`` through the test pipeline without its Resize, then the
    data preprocessor."""
    data = Compose(copy.deepcopy(TEST_PIPELINE[:2] + TEST_PIPELINE[3:]))(
        dict(img_path=img_path, seg_fields=[]))
    return model.data_preprocessor(
        dict(inputs=[data['inputs']], data_samples=[data['data_samples']]))


def e2e_probs_direct(model, img_path):
    """The E2E learner's own probabilities (MMSeg's encode_decode), averaged
    over 4x4 cells: the stride of its finest (MobileNetV2) feature level."""
    batch = batch_for(model, img_path)
    with torch.no_grad():
        logits = model.e2e.encode_decode(batch['inputs'],
                                         [batch['data_samples'][0].metainfo])
    return F.avg_pool2d(logits.softmax(1), 4)[0]


def entry_mtimes(store):
    return {
        n: os.stat(p).st_mtime_ns
        for n, p in store.entry_keys_on_disk().items()
    }


def make_cache(cache_dir,
               entries,
               key_root,
               num_classes,
               topk=None,
               compress=True,
               digest='0' * 64):
    """A cache written by hand: ``entries`` maps image paths to their
    probabilities (K, h, w)."""
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
