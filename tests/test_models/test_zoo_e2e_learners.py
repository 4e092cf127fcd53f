# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""MMSeg model-zoo segmentors as the frozen E2E learner.

Each family's zoo config is built with random weights (nothing is
downloaded: the E2E learner's ``init_weights`` never runs) and shrunk where
a config option allows it, on one tiny image: one training step and one
prediction, whose ``e2e_pred_sem_seg`` must be the E2E learner's own
``predict()``.
"""
import copy
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner
from mmseg.registry import MODELS

import mmseg_resensemble  # noqa: F401
from mmseg_resensemble.datasets import generate_shapes_dataset
from mmseg_resensemble.models.utils.e2e_learner import (auto_levels,
                                                        load_e2e_config)
from tests.tiny_models import make_batch

CONFIGS = osp.join(
    osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))), 'configs')
E2E_CONFIG = 'e2e/fcn_m-v2-d8_1xb8-1k_shapes-96x128.py'
RES_CONFIG = 'resensemble/resensemble_fcn-m-v2-d8_1xb8-2k_shapes-96x128.py'

# family: (zoo config, input size (H, W), overrides of the E2E model)
ZOO = {
    'fcn': ('fcn/fcn_r18-d8_4xb2-80k_cityscapes-512x1024.py', (64, 64), {}),
    'pspnet':
    ('pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py', (64, 64), {}),
    'deeplabv3plus':
    ('deeplabv3plus/deeplabv3plus_r18-d8_4xb2-80k_cityscapes-512x1024.py',
     (64, 64), {}),
    'ocrnet': ('ocrnet/ocrnet_hr18s_4xb2-40k_cityscapes-512x1024.py', (64, 64),
               {}),
    'segformer': ('segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py',
                  (64, 64), {}),
    'upernet-swin':
    ('swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-'
     '512x512.py', (64, 64), dict(backbone=dict(depths=(2, 2, 2, 2)))),
    'knet': ('knet/knet-s3_r50-d8_fcn_8xb2-adamw-80k_ade20k-512x512.py',
             (64, 64), {}),
    'segmenter': ('segmenter/segmenter_vit-t_mask_8xb1-160k_ade20k-512x512.py',
                  (64, 64), dict(backbone=dict(num_layers=2))),
    'bisenetv2': ('bisenetv2/bisenetv2_fcn_4xb4-160k_cityscapes-1024x1024.py',
                  (64, 64), {}),
    'stdc': ('stdc/stdc1_4xb12-80k_cityscapes-512x1024.py', (64, 64), {}),
    # LRASPPHead pools 49x49 windows of the stride-8 features
    'lraspp-mobilenetv3':
    ('mobilenet_v3/mobilenet-v3-d8-s_lraspp_4xb4-320k_cityscapes-512x1024.py',
     (400, 400), {}),
    'hrnet': ('hrnet/fcn_hr18s_4xb2-40k_cityscapes-512x1024.py', (64, 64), {}),
    'mask2former': ('mask2former/mask2former_r50_8xb2-90k_cityscapes-'
                    '512x1024.py', (64, 64),
                    dict(
                        decode_head=dict(
                            num_queries=10,
                            pixel_decoder=dict(encoder=dict(num_layers=1)),
                            transformer_decoder=dict(num_layers=2)))),
    'maskformer':
    ('maskformer/maskformer_r50-d32_8xb2-160k_ade20k-512x512.py', (64, 64),
     dict(
         decode_head=dict(
             num_queries=10, transformer_decoder=dict(num_layers=2)))),
    'pointrend': ('point_rend/pointrend_r50_4xb2-80k_cityscapes-512x1024.py',
                  (64, 64), {}),
    'pidnet': ('pidnet/pidnet-s_2xb6-120k_1024x1024-cityscapes.py', (64, 64),
               {}),
    'ddrnet': ('ddrnet/ddrnet_23-slim_in1k-pre_2xb6-120k_cityscapes-'
               '1024x1024.py', (64, 64), {}),
    # mmpretrain backbones (the `mmpretrain` extra), one block per stage
    'upernet-convnext':
    ('convnext/convnext-tiny_upernet_8xb2-amp-160k_ade20k-512x512.py', (64,
                                                                        64),
     dict(
         backbone=dict(
             arch=dict(
                 _delete_=True,
                 depths=[1, 1, 1, 1],
                 channels=[96, 192, 384, 768])))),
    'fpn-poolformer':
    ('poolformer/fpn_poolformer_s12_8xb4-40k_ade20k-512x512.py', (64, 64),
     dict(
         backbone=dict(
             arch=dict(
                 _delete_=True,
                 layers=[1, 1, 1, 1],
                 embed_dims=[64, 128, 320, 512],
                 mlp_ratios=[4, 4, 4, 4],
                 layer_scale_init_value=1e-5)))),
    # its test_cfg slides 64x64 windows with a 42 px stride
    'unet-slide': ('unet/unet-s5-d16_fcn_4xb4-40k_drive-64x64.py', (96, 96),
                   {}),
}


def zoo_e2e(name):
    """The family's zoo model config, shrunk by its overrides."""
    config, _, overrides = ZOO[name]
    cfg = Config(dict(model=load_e2e_config(f'mmseg::{config}').to_dict()))
    cfg.merge_from_dict(dict(model=copy.deepcopy(overrides)))
    return cfg.model


def e2e_num_classes(e2e):
    heads = e2e.decode_head
    head = heads[-1] if isinstance(heads, list) else heads
    # K-Net's IterativeDecodeHead: its kernel generator's
    return head.get('num_classes') or head.kernel_generate_head.num_classes


def build_resensemble(e2e, size, **kwargs):
    model = MODELS.build(
        dict(
            type='ResEnsembleSegmentor',
            e2e=e2e,
            decode_head=dict(
                type='ResidualDiffusionHead',
                in_channels='auto',
                in_index=None,
                input_transform='resize_concat',
                channels=16,
                num_classes=e2e_num_classes(e2e),
                denoiser=dict(
                    type='DilatedResDenoiser', num_blocks=1, dilations=(1, )),
                norm_cfg=dict(type='GN', num_groups=4),
                working_stride=4,
                diffusion=dict(num_timesteps=10)),
            # a partial dict: updates the E2E learner's (which pads
            # training batches to the zoo's crop size)
            data_preprocessor=dict(size=size),
            test_cfg=dict(sampler='ddim', num_steps=1),
            **kwargs))
    model.init_weights()
    return model


@pytest.mark.parametrize('name', sorted(ZOO))
def test_zoo_family(name):
    torch.manual_seed(0)
    _, size, _ = ZOO[name]
    e2e_cfg = zoo_e2e(name)
    model = build_resensemble(e2e_cfg, size)
    assert tuple(model.data_preprocessor.size) == size
    assert model.data_preprocessor.mean.flatten().tolist() == pytest.approx(
        e2e_cfg.data_preprocessor.mean)
    # the E2E learner's own test mode, unless the config sets one
    assert model.test_cfg['mode'] == e2e_cfg.test_cfg.get('mode', 'whole')
    num_classes = model.num_classes

    # in_channels='auto': the finest and the coarsest feature levels
    model.eval()
    feats = model.extract_feat(torch.zeros(1, 3, *size))
    assert isinstance(feats, list)
    head = model.decode_head
    levels = auto_levels([tuple(f.shape[1:]) for f in feats])
    assert tuple(head.in_index) == levels
    assert head.in_channels == sum(feats[i].shape[1] for i in levels)

    # one training step: the head learns, the E2E learner does not
    model.train()
    data = model.data_preprocessor(
        make_batch(n=1, size=size, num_classes=num_classes), True)
    loss = model(**data, mode='loss')['decode.loss_diffusion']
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.decode_head.parameters()]
    assert all(g is not None for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in model.e2e.parameters())
    assert not any(m.training for m in model.e2e.modules())

    # one prediction; x̂0 is what the E2E learner itself predicts
    model.eval()
    data = model.data_preprocessor(
        make_batch(n=1, size=size, num_classes=num_classes, seed=1), False)
    with torch.no_grad():
        ours = model(**copy.deepcopy(data), mode='predict')[0]
        theirs = model.e2e.predict(data['inputs'],
                                   copy.deepcopy(data['data_samples']))[0]
        probs = model.e2e_probs(data['inputs'],
                                [ds.metainfo for ds in data['data_samples']])
    assert ours.pred_sem_seg.shape == size
    assert ours.seg_logits.data.shape == (num_classes, *size)
    assert torch.equal(ours.e2e_pred_sem_seg.data,
                       theirs.pred_sem_seg.data.long())
    torch.testing.assert_close(ours.e2e_seg_logits.data,
                               theirs.seg_logits.data)
    # x̂0 is a distribution over the classes with the E2E learner's arg-max
    assert probs.shape == (1, num_classes, *size)
    assert (probs >= 0).all()
    torch.testing.assert_close(
        probs.sum(1), torch.ones(1, *size), atol=1e-5, rtol=0)
    assert torch.equal(
        probs.argmax(1, keepdim=True)[0], theirs.pred_sem_seg.data.long())


def run_test(cfg, data_root, work_dir):
    """``tools/test.py``'s run of ``cfg`` in this process: its metrics."""
    cfg = copy.deepcopy(cfg)
    cfg.work_dir = str(work_dir)
    for key in ('val_dataloader', 'test_dataloader'):
        cfg[key].num_workers = 0
        cfg[key].persistent_workers = False
        cfg[key].dataset.data_root = data_root
    return Runner.from_cfg(cfg).test()


def test_e2e_miou_of_a_slide_learner_is_its_own(tmp_path):
    """``e2e_mIoU`` of a ResEnsemble config that does not set
    ``test_cfg.mode`` is the slide-mode E2E learner's own mIoU."""
    data_root = generate_shapes_dataset(
        str(tmp_path / 'shapes'), dict(val=3), size=(96, 128), seed=2)
    e2e_cfg = Config.fromfile(osp.join(CONFIGS, E2E_CONFIG))
    e2e_cfg.model.test_cfg = dict(
        mode='slide', crop_size=(48, 64), stride=(32, 42))
    torch.manual_seed(0)
    e2e = MODELS.build(e2e_cfg.model)  # no init_weights: random weights
    for m in e2e.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    ckpt = str(tmp_path / 'e2e.pth')
    torch.save(dict(state_dict=e2e.state_dict()), ckpt)
    e2e_cfg.load_from = ckpt
    own = run_test(e2e_cfg, data_root, tmp_path / 'e2e')['mIoU']
    whole_cfg = copy.deepcopy(e2e_cfg)
    whole_cfg.model.test_cfg = dict(mode='whole')
    whole = run_test(whole_cfg, data_root, tmp_path / 'whole')['mIoU']
    # the windows change the E2E learner's prediction
    assert whole != own

    res_cfg = Config.fromfile(osp.join(CONFIGS, RES_CONFIG))
    res_cfg.model.e2e = e2e_cfg.model.to_dict()
    res_cfg.model.e2e_checkpoint = ckpt
    res_cfg.model.decode_head.channels = 16
    metrics = run_test(res_cfg, data_root, tmp_path / 'res')
    assert metrics['e2e_mIoU'] == own
