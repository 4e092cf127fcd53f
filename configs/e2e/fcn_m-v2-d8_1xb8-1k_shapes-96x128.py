# The demo's E2E learner: FCN on a MobileNetV2 (width 0.5, output stride
# 8), trained from scratch on the generated shapes data set on a CPU.
_base_ = [
    '../_base_/datasets/shapes.py', 'mmseg::_base_/default_runtime.py',
    '../_base_/schedules/schedule_1k.py'
]
custom_imports = dict(
    imports=['mmseg_resensemble'], allow_failed_imports=False)
crop_size = (96, 128)
norm_cfg = dict(type='BN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=crop_size)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='MobileNetV2',
        widen_factor=0.5,
        strides=(1, 2, 2, 1, 1, 1, 1),
        dilations=(1, 1, 1, 2, 2, 4, 4),
        out_indices=(1, 2, 4, 6),
        norm_cfg=norm_cfg),
    decode_head=dict(
        type='FCNHead',
        in_channels=160,
        in_index=3,
        channels=64,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=5,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
# AdamW rather than the schedule's SGD: this learner trains from scratch
optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=4e-3, weight_decay=1e-4))
param_scheduler = [
    dict(
        type='PolyLR',
        eta_min=1e-5,
        power=0.9,
        begin=0,
        end=1000,
        by_epoch=False)
]
randomness = dict(seed=0)
