# E2E learner for DRIVE (vessel segmentation, 2 classes): DeepLabV3+ on an
# ImageNet-pretrained MobileNetV2 (output stride 8; weights converted as
# ../_base_/models/deeplabv3plus_m-v2-d8.py says), trained on 128x128
# crops (see ../_base_/datasets/drive.py) and tested on whole images, on
# one GPU or a CPU.
_base_ = [
    '../_base_/models/deeplabv3plus_m-v2-d8.py', '../_base_/datasets/drive.py',
    'mmseg::_base_/default_runtime.py', '../_base_/schedules/schedule_1k.py'
]
custom_imports = dict(
    imports=['mmseg_resensemble'], allow_failed_imports=False)
crop_size = (128, 128)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    decode_head=dict(num_classes=2),
    auxiliary_head=dict(num_classes=2),
    # MMSeg's DRIVE configs slide 64x64 windows over the image (their
    # UNet). This fully convolutional learner takes the whole 584x565
    # image in one pass: on a CPU, 5-9x faster than sliding 128x128
    # windows with a 85 px stride (the ASPP's image pooling then sees the
    # whole image rather than a crop). For windows, pass --cfg-options
    # model.test_cfg.mode=slide model.test_cfg.crop_size="(128,128)"
    # model.test_cfg.stride="(85,85)"
    test_cfg=dict(mode='whole'))
randomness = dict(seed=0)
