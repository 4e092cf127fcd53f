# E2E learner of the CamVid benchmark (docs/benchmarks.md): DeepLabV3+ on
# an ImageNet-pretrained MobileNetV2, output stride 16, 128-channel decoder
# (weights converted as ../_base_/models/deeplabv3plus_m-v2-d16.py says),
# 3,000 iterations of 8 crops of 180x240 from images rescaled 0.5-2x
# around their own 480x360, tested on the full 480x360 images. The same
# run as `tools/benchmarks/bench_quality.py --data-root data/camvid
# --scale 480 360 --crop 180 240 --e2e-iters 3000`.
_base_ = [
    '../_base_/models/deeplabv3plus_m-v2-d16.py',
    '../_base_/datasets/camvid.py', 'mmseg::_base_/default_runtime.py',
    '../_base_/schedules/schedule_1k.py'
]
custom_imports = dict(
    imports=['mmseg_resensemble'], allow_failed_imports=False)
crop_size = (180, 240)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    decode_head=dict(num_classes=11),
    auxiliary_head=dict(num_classes=11))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='CheckImageAndLabel', num_classes=11),
    dict(
        type='RandomResize',
        scale=(480, 360),
        ratio_range=(0.5, 2.0),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
iters = 3000
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
