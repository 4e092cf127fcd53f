# E2E learner for CamVid: DeepLabV3+ on an ImageNet-pretrained MobileNetV2
# (output stride 8; weights converted as ../_base_/models/
# deeplabv3plus_m-v2-d8.py says), on one GPU or a CPU. A short schedule
# (1k iterations of 8 crops, about 22 epochs) that a CPU machine can run;
# then train the ResEnsemble config on top of it.
_base_ = [
    '../_base_/models/deeplabv3plus_m-v2-d8.py',
    '../_base_/datasets/camvid.py', 'mmseg::_base_/default_runtime.py',
    '../_base_/schedules/schedule_1k.py'
]
custom_imports = dict(
    imports=['mmseg_resensemble'], allow_failed_imports=False)
crop_size = (360, 480)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    decode_head=dict(num_classes=11),
    auxiliary_head=dict(num_classes=11))
randomness = dict(seed=0)
