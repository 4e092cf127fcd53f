# ResEnsemble-DDPM on top of the demo's E2E learner
# (configs/e2e/fcn_m-v2-d8_1xb8-1k_shapes-96x128.py, trained first).
_base_ = [
    '../_base_/models/resensemble_residual-diffusion.py',
    '../_base_/datasets/shapes.py', '../_base_/resensemble_runtime.py',
    '../_base_/schedules/resensemble_adamw_1k.py'
]
model = dict(
    # the frozen E2E learner: its config and trained weights
    e2e='{{fileDirname}}/../e2e/fcn_m-v2-d8_1xb8-1k_shapes-96x128.py',
    e2e_checkpoint='work_dirs/fcn_m-v2-d8_1xb8-1k_shapes-96x128/'
    'iter_1000.pth',
    decode_head=dict(
        # the E2E backbone's stride-4 and stride-8 features
        in_channels=[16, 160],
        in_index=(0, 3),
        num_classes=5,
        # the head the generated set's benchmarks measured (docs/
        # benchmarks.md, sections 4 to 7): 64 channels, dense blocks
        channels=64,
        denoiser=dict(block_type='dense'),
        # the FCN's resolution
        working_stride=8))
# the 1k schedule, twice as long and at twice the learning rate
optim_wrapper = dict(optimizer=dict(lr=2e-3))
param_scheduler = [
    dict(
        type='PolyLR',
        eta_min=1e-5,
        power=0.9,
        begin=0,
        end=2000,
        by_epoch=False)
]
train_cfg = dict(max_iters=2000, val_interval=1000)
default_hooks = dict(checkpoint=dict(interval=1000))
# mIoU of the ensemble and, as e2e_mIoU, of the frozen E2E learner alone
val_evaluator = dict(type='ResEnsembleIoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
