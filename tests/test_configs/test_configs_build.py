# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""Every config of ``configs/`` loads and builds its model.

Nothing is downloaded: ResEnsemble configs get ``e2e_checkpoint=None``
(or a local stub written here), and the E2E learners are built without
``init_weights`` (their backbones would load pretrained weights).
"""
import copy
import glob
import os
import os.path as osp

import cv2
import mmengine
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS, MODELS

import mmseg_resensemble  # noqa: F401
import mmseg_resensemble.datasets.camvid  # noqa: F401  (registers it)
from mmseg_resensemble.models.utils.e2e_learner import (auto_levels,
                                                        load_e2e_config)
from mmseg_resensemble.utils.mobilenetv2_converter import convert_mobilenetv2
from tests.test_tools.test_mobilenetv2_converter import source_state_dict
from tests.tiny_models import make_batch

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG_DIR = osp.join(REPO, 'configs')
SHARED_DATA = osp.join(REPO, '..', 'shared', 'data')
MMSEG_CONFIGS = osp.join(
    osp.dirname(mmengine.utils.get_installed_path('mmseg')), 'mmseg', '.mim',
    'configs')
CONFIGS = sorted(
    osp.relpath(p, CONFIG_DIR)
    for p in glob.glob(osp.join(CONFIG_DIR, '**', '*.py'), recursive=True)
    if '_base_' not in osp.relpath(p, CONFIG_DIR).split(os.sep))
# configs small enough for a loss and predict step on a CPU
SMALL = ('shapes', 'camvid', 'drive')
CAMVID_RES = ('resensemble/resensemble_deeplabv3plus-m-v2-d8_1xb8-1k_'
              'camvid-360x480.py')
CAMVID_E2E = 'e2e/deeplabv3plus_m-v2-d8_1xb8-1k_camvid-360x480.py'
DRIVE_E2E = 'e2e/deeplabv3plus_m-v2-d8_1xb8-1k_drive-128x128.py'


def load(name):
    cfg = Config.fromfile(osp.join(CONFIG_DIR, name))
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    return cfg


def is_resensemble(cfg):
    return cfg.model.type == 'ResEnsembleSegmentor'


def build_model(cfg, **overrides):
    """The config's model; no checkpoint or pretrained weights loaded."""
    model_cfg = copy.deepcopy(cfg.model)
    if is_resensemble(cfg):
        model_cfg.e2e_checkpoint = None
    model_cfg.update(overrides)
    model = MODELS.build(model_cfg)
    if is_resensemble(cfg):
        # initialises the diffusion learner only
        model.init_weights()
    return model


def num_classes_of(model):
    return model.decode_head.num_classes


def test_configs_found():
    names = set(CONFIGS)
    for name in (CAMVID_E2E, DRIVE_E2E, CAMVID_RES):
        assert name in names
    assert len([n for n in names if n.startswith('resensemble/')]) >= 5


@pytest.mark.parametrize('name', CONFIGS)
def test_config_builds(name):
    cfg = load(name)
    assert cfg.custom_imports == dict(
        imports=['mmseg_resensemble'], allow_failed_imports=False)
    model = build_model(cfg)
    # the head's classes are the data set's
    dataset_cfg = cfg.train_dataloader.dataset
    dataset_cls = DATASETS.get(dataset_cfg.get('dataset', dataset_cfg).type)
    assert num_classes_of(model) == len(dataset_cls.METAINFO['classes'])

    if not is_resensemble(cfg):
        assert type(model).__name__ == 'EncoderDecoder'
        if any(s in name for s in SMALL):
            model.data_preprocessor.size = (64, 96)
            data = model.data_preprocessor(
                make_batch(
                    n=2, size=(64, 96), num_classes=num_classes_of(model)),
                True)
            losses = model(**data, mode='loss')
            assert torch.isfinite(losses['decode.loss_ce'])
        return
    assert type(model).__name__ == 'ResEnsembleSegmentor'
    assert model.e2e_num_classes == model.num_classes
    assert all(not p.requires_grad for p in model.e2e.parameters())
    # the head's in_channels match the E2E backbone's features: as the
    # config gives them, or measured ('auto': the finest and the coarsest
    # levels)
    model.eval()
    with torch.no_grad():
        feats = model.extract_feat(torch.randn(1, 3, 64, 64))
        cond = model.decode_head.encode_condition(feats, (64, 64))
    head = model.decode_head
    channels = [feats[i].shape[1] for i in head.in_index]
    if cfg.model.decode_head.in_channels == 'auto':
        assert tuple(head.in_index) == auto_levels(
            [tuple(f.shape[1:]) for f in feats])
        assert head.in_channels == sum(channels)
    else:
        assert channels == list(cfg.model.decode_head.in_channels)
    stride = cfg.model.decode_head.working_stride
    assert cond.shape == (1, head.channels, 64 // stride, 64 // stride)
    # the sampler settings the configs promise
    assert model.test_cfg['sampler'] == 'ddim'
    # one DDIM step, the best single-sample setting measured
    # (docs/benchmarks.md), with the x̄0-prediction it was measured with
    assert model.test_cfg['num_steps'] == 1
    assert head.prediction_type == 'sample'
    assert cfg.optim_wrapper.constructor == \
        'TrainableParamsOptimWrapperConstructor'
    # the E2E learner's test mode is kept
    e2e_test = load_e2e_config(cfg.model.e2e).get('test_cfg', {})
    assert model.test_cfg['mode'] == e2e_test.get('mode', 'whole')
    if model.test_cfg['mode'] == 'slide':
        assert tuple(model.test_cfg['crop_size']) == tuple(
            e2e_test['crop_size'])

    if any(s in name for s in SMALL):
        # training pads to the config's crop; a smaller one keeps it fast
        assert tuple(model.data_preprocessor.size) == tuple(cfg.crop_size)
        size = (64, 96)
        model.data_preprocessor.size = size
        model.train()
        data = model.data_preprocessor(
            make_batch(n=2, size=size, num_classes=model.num_classes), True)
        losses = model(**data, mode='loss')
        assert torch.isfinite(losses['decode.loss_diffusion'])
        model.eval()
        data = model.data_preprocessor(
            make_batch(n=1, size=size, num_classes=model.num_classes), False)
        with torch.no_grad():
            result = model(**data, mode='predict')[0]
        assert result.pred_sem_seg.shape == size
        assert result.seg_logits.data.shape[0] == model.num_classes


@pytest.mark.parametrize('name',
                         [n for n in CONFIGS if n.startswith('resensemble/')])
def test_resensemble_e2e_checkpoint_points_at_its_e2e(name):
    """Local configs read the E2E config's last checkpoint; model-zoo ones
    the weights of the E2E config's metafile entry."""
    cfg = load(name)
    e2e, ckpt = cfg.model.e2e, cfg.model.e2e_checkpoint
    assert isinstance(e2e, str)
    stem = osp.splitext(osp.basename(e2e))[0]
    if e2e.startswith('mmseg::'):
        folder = e2e[len('mmseg::'):].split('/')[0]
        meta = mmengine.load(osp.join(MMSEG_CONFIGS, folder, 'metafile.yaml'))
        entry = [m for m in meta['Models'] if m['Name'] == stem]
        assert len(entry) == 1
        assert ckpt == entry[0]['Weights']
    else:
        assert osp.isfile(e2e)
        e2e_cfg = Config.fromfile(e2e)
        iters = e2e_cfg.train_cfg.max_iters
        assert ckpt == f'work_dirs/{stem}/iter_{iters}.pth'
        assert iters % e2e_cfg.default_hooks.checkpoint.interval == 0


def test_stub_e2e_checkpoint_loads(tmp_path):
    """A local E2E checkpoint passed as e2e_checkpoint is loaded, frozen."""
    cfg = load(CAMVID_RES)
    # no init_weights: no download
    e2e = MODELS.build(load_e2e_config(cfg.model.e2e))
    with torch.no_grad():
        for p in e2e.parameters():
            p.normal_(generator=torch.Generator().manual_seed(0))
    stub = tmp_path / 'iter_1000.pth'
    torch.save(dict(meta=dict(), state_dict=e2e.state_dict()), stub)
    model = build_model(cfg, e2e_checkpoint=str(stub))
    for k, v in e2e.state_dict().items():
        assert torch.equal(model.e2e.state_dict()[k], v), k
    assert all(not p.requires_grad for p in model.e2e.parameters())
    # a checkpoint of another E2E learner (DRIVE: 2 classes) is refused
    other = MODELS.build(load(DRIVE_E2E).model)
    wrong = tmp_path / 'drive.pth'
    torch.save(dict(state_dict=other.state_dict()), wrong)
    with pytest.raises(ValueError, match='shape mismatch'):
        build_model(cfg, e2e_checkpoint=str(wrong))


@pytest.mark.parametrize('name', [CAMVID_E2E, DRIVE_E2E])
def test_pretrained_backbone_loads_converted_weights(name, tmp_path):
    """The backbone's init_cfg reads the converter's output."""
    cfg = load(name)
    init = cfg.model.backbone.init_cfg
    assert init.type == 'Pretrained'
    assert init.checkpoint == 'work_dirs/pretrained/mobilenet_v2_mmseg.pth'
    converted = convert_mobilenetv2(source_state_dict())
    path = tmp_path / 'mobilenet_v2_mmseg.pth'
    torch.save(converted, path)
    cfg.model.backbone.init_cfg.checkpoint = str(path)
    model = MODELS.build(cfg.model)
    model.init_weights()
    own = model.backbone.state_dict()
    for k, v in converted.items():
        assert torch.equal(own[k], v), k


def write_fake(root, splits, size, num_classes):
    rng = np.random.default_rng(0)
    for split, n in splits.items():
        for i in range(n):
            img = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            label = rng.integers(0, num_classes, size).astype(np.uint8)
            for sub, arr in (('img_dir', img), ('ann_dir', label)):
                folder = osp.join(root, sub, split)
                os.makedirs(folder, exist_ok=True)
                assert cv2.imwrite(osp.join(folder, f'{i:02d}_x.png'), arr)


def dataloader_datasets(cfg, data_root):
    out = {}
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        dataset_cfg = copy.deepcopy(cfg[key].dataset)
        dataset_cfg.data_root = data_root
        out[key] = DATASETS.build(dataset_cfg)
    return out


@pytest.mark.parametrize('name,size,num_classes,crop,splits', [
    (CAMVID_E2E, (360, 480), 11, (360, 480), ('train', 'val', 'test')),
    (DRIVE_E2E, (584, 565), 2, (128, 128), ('train', 'test', 'test')),
])
def test_dataset_configs(name, size, num_classes, crop, splits, tmp_path):
    cfg = load(name)
    assert cfg.data_preprocessor.size == crop
    write_fake(tmp_path, dict(train=2, val=1, test=3), size, num_classes)
    datasets = dataloader_datasets(cfg, str(tmp_path))
    sizes = dict(train=2, val=1, test=3)
    for key, split in zip(datasets, splits):
        assert len(datasets[key]) == sizes[split], key
        assert len(datasets[key].metainfo['classes']) == num_classes
    sample = datasets['train_dataloader'][0]
    # at most the crop (a down-scaled image is smaller); the data
    # preprocessor pads the batch to the crop
    assert all(s <= c for s, c in zip(sample['inputs'].shape[-2:], crop))
    preprocessor = MODELS.build(cfg.data_preprocessor)
    batch = preprocessor(
        dict(inputs=[sample['inputs']], data_samples=[sample['data_samples']]),
        True)
    assert tuple(batch['inputs'].shape[-2:]) == crop
    gt = batch['data_samples'][0].gt_sem_seg.data
    assert set(gt.unique().tolist()) <= set(range(num_classes)) | {255}
    sample = datasets['val_dataloader'][0]
    assert tuple(sample['inputs'].shape[-2:]) == size  # not resized
    if name == DRIVE_E2E:
        # labels kept as written: vessel 1 stays 1 (no reduce_zero_label)
        label = cv2.imread(sample['data_samples'].seg_map_path,
                           cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(
            sample['data_samples'].gt_sem_seg.data[0].numpy(), label)


@pytest.mark.parametrize('name,folder,sizes', [
    (CAMVID_E2E, 'camvid', (367, 101, 233)),
    (DRIVE_E2E, 'drive', (20, 20, 20)),
])
def test_dataset_configs_read_shared_data(name, folder, sizes):
    root = osp.join(SHARED_DATA, folder)
    if not osp.isdir(root):
        pytest.skip(f'../shared/data/{folder} is not here; the fake '
                    'layouts of test_dataset_configs cover the configs')
    datasets = dataloader_datasets(load(name), root)
    assert tuple(len(d) for d in datasets.values()) == sizes
    sample = datasets['val_dataloader'][0]
    assert sample['data_samples'].gt_sem_seg.data.shape[-2:] == \
        sample['inputs'].shape[-2:]
