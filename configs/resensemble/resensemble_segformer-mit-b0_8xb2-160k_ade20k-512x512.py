# ResEnsemble-DDPM on ADE20K, on top of MMSeg's model-zoo SegFormer MiT-B0
# (37.41 mIoU on val, whole-image test). Only the diffusion learner
# trains, on 8 GPUs x 2 images (tools/dist_train.sh CONFIG 8); the E2E
# weights download from the model zoo.
_base_ = [
    '../_base_/models/resensemble_residual-diffusion.py',
    'mmseg::_base_/datasets/ade20k.py', '../_base_/resensemble_runtime.py',
    '../_base_/schedules/resensemble_adamw_160k.py'
]
e2e_checkpoint = 'https://download.openmmlab.com/mmsegmentation/v0.5/segformer/segformer_mit-b0_512x512_160k_ade20k/segformer_mit-b0_512x512_160k_ade20k_20210726_101530-8ffa8fda.pth'  # noqa
model = dict(
    # the frozen E2E learner and its weights
    e2e='mmseg::segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py',
    e2e_checkpoint=e2e_checkpoint,
    decode_head=dict(
        # MiT-B0 stage outputs: 32, 64, 160, 256 channels at strides 4, 8,
        # 16, 32; all four, as SegFormer's head uses them
        in_channels=[32, 64, 160, 256],
        in_index=(0, 1, 2, 3),
        num_classes=150))
# 2 images per GPU, as the E2E config (the data set base has 4)
train_dataloader = dict(batch_size=2, num_workers=2)
# mIoU of the ensemble and, as e2e_mIoU, of the frozen E2E learner alone
val_evaluator = dict(type='ResEnsembleIoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
