# E2E learner for CamVid: DeepLabV3+ on an ImageNet-pretrained MobileNetV2
# (output stride 8), as MMSeg's
# mobilenet_v2/mobilenet-v2-d8_deeplabv3plus_4xb2-80k_cityscapes-512x1024,
# on one GPU or a CPU. The backbone weights are torchvision's, converted
# once to MMSeg's key layout by
#   python tools/model_converters/mobilenetv2_torchvision2mmseg.py \
#       ../shared/weights/mobilenet_v2-b0353104.pth \
#       work_dirs/pretrained/mobilenet_v2_mmseg.pth
# A short schedule (1k iterations of 8 crops, about 22 epochs) that a CPU
# machine can run; then train the ResEnsemble config on top of it.
_base_ = [
    'mmseg::_base_/models/deeplabv3plus_r50-d8.py',
    '../_base_/datasets/camvid.py', 'mmseg::_base_/default_runtime.py'
]
custom_imports = dict(
    imports=['mmseg_resensemble'], allow_failed_imports=False)
crop_size = (360, 480)
# BN, not MMSeg's SyncBN: one process (single GPU or CPU)
norm_cfg = dict(type='BN', requires_grad=True)
checkpoint = 'work_dirs/pretrained/mobilenet_v2_mmseg.pth'
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='MobileNetV2',
        widen_factor=1.,
        strides=(1, 2, 2, 1, 1, 1, 1),
        dilations=(1, 1, 1, 2, 2, 4, 4),
        out_indices=(1, 2, 4, 6),
        norm_cfg=norm_cfg,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(
        in_channels=320, c1_in_channels=24, num_classes=11, norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=96, num_classes=11, norm_cfg=norm_cfg))
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0005),
    clip_grad=None)
param_scheduler = [
    dict(
        type='PolyLR',
        eta_min=1e-4,
        power=0.9,
        begin=0,
        end=1000,
        by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=1000, val_interval=500)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=500),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
randomness = dict(seed=0)
