# ResEnsemble-DDPM on Cityscapes, on top of MMSeg's model-zoo Mask2Former
# R-50 (80.44 mIoU on val, whole-image test). Mask2Former's head is built
# on mmdet's: install the extra first (pip install -e .[mask2former]).
# Only the diffusion learner trains, on 4 GPUs x 2 images
# (tools/dist_train.sh CONFIG 4); the E2E weights download from the zoo.
_base_ = [
    '../_base_/models/resensemble_residual-diffusion.py',
    'mmseg::_base_/datasets/cityscapes.py', '../_base_/resensemble_runtime.py',
    '../_base_/schedules/resensemble_adamw_80k.py'
]
e2e_checkpoint = 'https://download.openmmlab.com/mmsegmentation/v0.5/mask2former/mask2former_r50_8xb2-90k_cityscapes-512x1024/mask2former_r50_8xb2-90k_cityscapes-512x1024_20221202_140802-ffd9d750.pth'  # noqa
model = dict(
    # the frozen E2E learner and its weights; its x̂0 is the normalised
    # class x mask scores of Mask2Former's own predict()
    e2e='mmseg::mask2former/mask2former_r50_8xb2-90k_cityscapes-512x1024.py',
    e2e_checkpoint=e2e_checkpoint,
    # in_channels='auto' (from the base): the E2E backbone's highest- and
    # lowest-resolution outputs, ResNet-50's stride-4 (256 channels) and
    # stride-32 (2048) stages. The test mode is the E2E config's (whole)
    decode_head=dict(num_classes=19))
# mIoU of the ensemble and, as e2e_mIoU, of the frozen E2E learner alone
val_evaluator = dict(type='ResEnsembleIoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
