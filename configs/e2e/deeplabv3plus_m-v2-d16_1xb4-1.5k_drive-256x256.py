# E2E learner of the DRIVE benchmark (docs/benchmarks.md): DeepLabV3+ on
# an ImageNet-pretrained MobileNetV2, output stride 16, 128-channel decoder
# (weights converted as ../_base_/models/deeplabv3plus_m-v2-d16.py says),
# on the images upscaled 2x (1130x1168), so that the stride-4 decoder
# resolves vessels 1-2 pixels wide: 1,500 iterations of 4 crops of 256x256
# from images rescaled 0.5-2x around that size, tested on the whole
# upscaled image in 256x256 windows. The same run as
# `tools/benchmarks/bench_quality.py --data-root data/drive --scale 1130
# 1168 --crop 256 256 --slide --batch-size 4 --e2e-iters 1500`.
_base_ = [
    '../_base_/models/deeplabv3plus_m-v2-d16.py',
    '../_base_/datasets/drive.py', 'mmseg::_base_/default_runtime.py',
    '../_base_/schedules/schedule_1k.py'
]
custom_imports = dict(
    imports=['mmseg_resensemble'], allow_failed_imports=False)
crop_size = (256, 256)
img_scale = (1130, 1168)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    decode_head=dict(num_classes=2),
    auxiliary_head=dict(num_classes=2),
    # windows of the training crop: on the whole image the ASPP's image
    # pooling sees another context than in training (vessel Dice 36.2
    # whole, 75.6 sliding, docs/benchmarks.md)
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(170, 170)))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='CheckImageAndLabel', num_classes=2),
    dict(
        type='RandomResize',
        scale=img_scale,
        ratio_range=(0.5, 2.0),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='CheckImageAndLabel', num_classes=2),
    dict(type='PackSegInputs')
]
train_dataloader = dict(batch_size=4, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
iters = 1500
param_scheduler = [
    dict(
        type='PolyLR',
        eta_min=1e-4,
        power=0.9,
        begin=0,
        end=iters,
        by_epoch=False)
]
train_cfg = dict(max_iters=iters, val_interval=iters)
default_hooks = dict(checkpoint=dict(interval=iters))
randomness = dict(seed=0)
