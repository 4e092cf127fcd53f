# DeepLabV3+ on an ImageNet-pretrained MobileNetV2 (output stride 8), as
# MMSeg's mobilenet_v2/mobilenet-v2-d8_deeplabv3plus configs, with BN rather
# than SyncBN (one process: a single GPU or a CPU). The backbone weights
# are torchvision's, converted once to MMSeg's key layout by
#   python tools/model_converters/mobilenetv2_torchvision2mmseg.py \
#       ../shared/weights/mobilenet_v2-b0353104.pth \
#       work_dirs/pretrained/mobilenet_v2_mmseg.pth
# A config on top sets `num_classes` of both heads.
_base_ = ['mmseg::_base_/models/deeplabv3plus_r50-d8.py']
norm_cfg = dict(type='BN', requires_grad=True)
checkpoint = 'work_dirs/pretrained/mobilenet_v2_mmseg.pth'
model = dict(
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
    decode_head=dict(in_channels=320, c1_in_channels=24, norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=96, norm_cfg=norm_cfg))
