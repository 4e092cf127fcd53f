# ResEnsemble-DDPM on Cityscapes, on top of MMSeg's model-zoo DeepLabV3+
# R-50-D8 (80.09 mIoU on val, whole-image test). Only the diffusion
# learner trains, on 4 GPUs x 2 images (tools/dist_train.sh CONFIG 4);
# the E2E weights download from the model zoo.
_base_ = [
    '../_base_/models/resensemble_residual-diffusion.py',
    'mmseg::_base_/datasets/cityscapes.py', '../_base_/resensemble_runtime.py',
    '../_base_/schedules/resensemble_adamw_80k.py'
]
e2e_checkpoint = 'https://download.openmmlab.com/mmsegmentation/v0.5/deeplabv3plus/deeplabv3plus_r50-d8_512x1024_80k_cityscapes/deeplabv3plus_r50-d8_512x1024_80k_cityscapes_20200606_114049-f9fb496d.pth'  # noqa
model = dict(
    # the frozen E2E learner (its SyncBN stays in eval mode) and weights
    e2e='mmseg::deeplabv3plus/'
    'deeplabv3plus_r50-d8_4xb2-80k_cityscapes-512x1024.py',
    e2e_checkpoint=e2e_checkpoint,
    decode_head=dict(
        # ResNet-50-D8 stage outputs: 256 (stride 4), 512, 1024, 2048
        # (stride 8); the stride-4 and last ones, as DeepLabV3+ uses
        in_channels=[256, 2048],
        in_index=(0, 3),
        num_classes=19))
# mIoU of the ensemble and, as e2e_mIoU, of the frozen E2E learner alone
val_evaluator = dict(type='ResEnsembleIoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
