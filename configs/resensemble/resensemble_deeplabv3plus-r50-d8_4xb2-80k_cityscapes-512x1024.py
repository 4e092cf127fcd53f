# ResEnsemble-DDPM on Cityscapes, on top of MMSeg's model-zoo DeepLabV3+
# R-50-D8 (80.09 mIoU on val, whole-image test). Only the diffusion
# learner trains, on 4 GPUs x 2 images (tools/dist_train.sh CONFIG 4);
# the E2E weights download from the model zoo.
_base_ = [
    'mmseg::_base_/datasets/cityscapes.py', 'mmseg::_base_/default_runtime.py'
]
custom_imports = dict(
    imports=['mmseg_resensemble'], allow_failed_imports=False)
e2e_checkpoint = 'https://download.openmmlab.com/mmsegmentation/v0.5/deeplabv3plus/deeplabv3plus_r50-d8_512x1024_80k_cityscapes/deeplabv3plus_r50-d8_512x1024_80k_cityscapes_20200606_114049-f9fb496d.pth'  # noqa
model = dict(
    type='ResEnsembleSegmentor',
    # the frozen E2E learner (its SyncBN stays in eval mode) and weights
    e2e='mmseg::deeplabv3plus/'
    'deeplabv3plus_r50-d8_4xb2-80k_cityscapes-512x1024.py',
    e2e_checkpoint=e2e_checkpoint,
    decode_head=dict(
        type='ResidualDiffusionHead',
        # ResNet-50-D8 stage outputs: 256 (stride 4), 512, 1024, 2048
        # (stride 8); the stride-4 and last ones, as DeepLabV3+ uses
        in_channels=[256, 2048],
        in_index=(0, 3),
        input_transform='resize_concat',
        channels=128,
        num_classes=19,
        num_blocks=4,
        dilations=(1, 2, 4, 1),
        scale=1.0,
        # DeepLabV3+'s decoder resolution
        working_stride=4,
        # x̄0-prediction: better than the paper's 'epsilon' on the generated
        # data set (docs/benchmarks.md); not yet measured on this data set
        prediction_type='sample',
        diffusion=dict(
            num_timesteps=1000,
            beta_schedule='linear',
            beta_start=1e-4,
            beta_end=2e-2),
        align_corners=False),
    # whole-image inference, as the E2E config
    test_cfg=dict(
        mode='whole', sampler='ddim', num_steps=4, num_samples=1, seed=0))
optim_wrapper = dict(
    type='OptimWrapper',
    constructor='TrainableParamsOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=2e-4, weight_decay=1e-4),
    clip_grad=dict(max_norm=1.0))
param_scheduler = [
    dict(
        type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=1000),
    dict(
        type='PolyLR',
        eta_min=1e-6,
        power=0.9,
        begin=1000,
        end=80000,
        by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=80000, val_interval=8000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=8000),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
# mIoU of the ensemble and, as e2e_mIoU, of the frozen E2E learner alone
val_evaluator = dict(type='ResEnsembleIoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
