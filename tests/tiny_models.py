# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""Tiny model configs and batches shared by the tests (fast on a CPU)."""
import torch
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample

K = 3
NORM = dict(type='BN', requires_grad=True)
DATA_PREPROCESSOR = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size_divisor=8)
BACKBONE = dict(
    type='MobileNetV2',
    widen_factor=0.25,
    strides=(1, 2, 2, 1, 1, 1, 1),
    dilations=(1, 1, 1, 2, 2, 2, 2),
    out_indices=(1, 2, 4, 6),
    norm_cfg=NORM)
# the backbone's output channels at widen_factor 0.25
BACKBONE_CHANNELS = [8, 8, 24, 80]


def fcn_e2e(num_classes=K, auxiliary=True):
    model = dict(
        type='EncoderDecoder',
        data_preprocessor=DATA_PREPROCESSOR,
        backbone=BACKBONE,
        decode_head=dict(
            type='FCNHead',
            in_channels=80,
            in_index=3,
            channels=16,
            num_convs=1,
            num_classes=num_classes,
            dropout_ratio=0.5,
            norm_cfg=NORM),
        test_cfg=dict(mode='whole'))
    if auxiliary:
        model['auxiliary_head'] = dict(
            type='FCNHead',
            in_channels=24,
            in_index=2,
            channels=8,
            num_convs=1,
            num_classes=num_classes,
            norm_cfg=NORM)
    return model


def ocr_e2e(num_classes=K):
    return dict(
        type='CascadeEncoderDecoder',
        data_preprocessor=DATA_PREPROCESSOR,
        num_stages=2,
        backbone=BACKBONE,
        decode_head=[
            dict(
                type='FCNHead',
                in_channels=80,
                in_index=3,
                channels=16,
                num_convs=1,
                num_classes=num_classes,
                norm_cfg=NORM),
            dict(
                type='OCRHead',
                in_channels=80,
                in_index=3,
                channels=16,
                ocr_channels=8,
                num_classes=num_classes,
                norm_cfg=NORM)
        ],
        test_cfg=dict(mode='whole'))


def head_cfg(num_classes=K, **kwargs):
    cfg = dict(
        type='ResidualDiffusionHead',
        in_channels=[BACKBONE_CHANNELS[1], BACKBONE_CHANNELS[3]],
        in_index=(1, 3),
        input_transform='resize_concat',
        channels=16,
        num_classes=num_classes,
        denoiser=dict(
            type='DilatedResDenoiser', num_blocks=2, dilations=(1, 2)),
        norm_cfg=dict(type='GN', num_groups=4),
        diffusion=dict(num_timesteps=20))
    cfg.update(kwargs)
    return cfg


def make_batch(n=2, size=(24, 32), num_classes=K, seed=0):
    """A training/test batch of ``n`` random images and label maps of
    ``size`` (H, W), before the data preprocessor."""
    g = torch.Generator().manual_seed(seed)
    samples = []
    for _ in range(n):
        ds = SegDataSample(
            metainfo=dict(
                img_path=f'img_{len(samples)}.png',
                img_shape=size,
                ori_shape=size,
                pad_shape=size,
                padding_size=[0, 0, 0, 0]))
        ds.gt_sem_seg = PixelData(
            data=torch.randint(0, num_classes, (1, *size), generator=g))
        samples.append(ds)
    inputs = [
        torch.randint(0, 256, (3, *size), generator=g).float()
        for _ in range(n)
    ]
    return dict(inputs=inputs, data_samples=samples)
