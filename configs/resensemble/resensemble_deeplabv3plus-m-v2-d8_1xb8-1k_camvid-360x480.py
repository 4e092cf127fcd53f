# ResEnsemble-DDPM on CamVid, on top of the DeepLabV3+ MobileNetV2 E2E
# learner (configs/e2e/deeplabv3plus_m-v2-d8_1xb8-1k_camvid-360x480.py,
# trained first). Only the diffusion learner trains; one GPU or a CPU.
_base_ = [
    '../_base_/models/resensemble_residual-diffusion.py',
    '../_base_/datasets/camvid.py', '../_base_/resensemble_runtime.py',
    '../_base_/schedules/resensemble_adamw_1k.py'
]
model = dict(
    # the frozen E2E learner: its config and trained weights
    e2e='{{fileDirname}}/../e2e/'
    'deeplabv3plus_m-v2-d8_1xb8-1k_camvid-360x480.py',
    e2e_checkpoint='work_dirs/deeplabv3plus_m-v2-d8_1xb8-1k_camvid-360x480/'
    'iter_1000.pth',
    decode_head=dict(
        # the E2E backbone's stride-4 (24 channels) and stride-8 (320)
        # features; MobileNetV2 out_indices (1, 2, 4, 6) give 24, 32, 96,
        # 320 channels
        in_channels=[24, 320],
        in_index=(0, 3),
        num_classes=11))
# mIoU of the ensemble and, as e2e_mIoU, of the frozen E2E learner alone
val_evaluator = dict(type='ResEnsembleIoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
