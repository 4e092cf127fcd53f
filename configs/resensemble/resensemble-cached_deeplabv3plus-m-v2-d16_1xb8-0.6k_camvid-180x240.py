# ResEnsemble-DDPM of the CamVid benchmark (docs/benchmarks.md), on top of
# the E2E learner configs/e2e/deeplabv3plus_m-v2-d16_1xb8-3k_camvid-
# 180x240.py (trained first): the shipped head (x̄0-prediction, one DDIM
# step), 600 iterations of 8 crops of 180x240, x̂0 from the E2E cache (built
# by E2ECacheHook before training, on the full 480x360 images). The same run
# as `tools/benchmarks/bench_quality.py --data-root data/camvid --scale 480
# 360 --crop 180 240 --iters 600`.
_base_ = [
    '../_base_/models/resensemble_residual-diffusion.py',
    '../_base_/datasets/camvid.py', '../_base_/resensemble_runtime.py',
    '../_base_/schedules/resensemble_adamw_1k.py'
]
e2e_cache_dir = 'work_dirs/e2e_cache/deeplabv3plus_m-v2-d16_camvid'
model = dict(
    e2e='{{fileDirname}}/../e2e/'
    'deeplabv3plus_m-v2-d16_1xb8-3k_camvid-180x240.py',
    e2e_checkpoint='work_dirs/deeplabv3plus_m-v2-d16_1xb8-3k_camvid-'
    '180x240/iter_3000.pth',
    decode_head=dict(
        # the E2E backbone's stride-4 (24 channels) and stride-16 (320)
        # features
        in_channels=[24, 320],
        in_index=(0, 3),
        num_classes=11))
custom_hooks = [
    dict(type='ResEnsembleSanityCheckHook', scan_files=True),
    dict(type='E2ECacheHook', cache_dir=e2e_cache_dir),
    dict(type='NonFiniteLossHook'),
    dict(type='RandomStateHook'),
]
crop_size = (180, 240)
# no photometric distortion: the cached x̂0 is of the undistorted image
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='CheckImageAndLabel', num_classes=11),
    dict(type='LoadE2ECache', cache_dir=e2e_cache_dir),
    dict(
        type='RandomResize',
        scale=(480, 360),
        ratio_range=(0.5, 2.0),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackResEnsembleInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
iters = 600
param_scheduler = [
    dict(
        type='PolyLR',
        eta_min=1e-5,
        power=0.9,
        begin=0,
        end=iters,
        by_epoch=False)
]
train_cfg = dict(max_iters=iters, val_interval=iters)
default_hooks = dict(checkpoint=dict(interval=iters))
# mIoU of the ensemble and, as e2e_mIoU, of the frozen E2E learner alone
val_evaluator = dict(type='ResEnsembleIoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
