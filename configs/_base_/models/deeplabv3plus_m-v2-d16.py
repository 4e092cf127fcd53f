# DeepLabV3+ on an ImageNet-pretrained MobileNetV2 with output stride 16
# and a 128-channel decoder: the light E2E learner of the real-data
# benchmarks (tools/benchmarks/bench_quality.py --data-root), about 20x
# cheaper to train than the output-stride-8, 512-channel
# deeplabv3plus_m-v2-d8.py. BN rather than SyncBN (one process). The
# backbone weights are torchvision's, converted to MMSeg's key layout by
#   python tools/model_converters/mobilenetv2_torchvision2mmseg.py \
#       mobilenet_v2-b0353104.pth work_dirs/pretrained/mobilenet_v2_mmseg.pth
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
        # strides 4, 8, 16, 16 at out_indices (1, 2, 4, 6): 24, 32, 96 and
        # 320 channels
        strides=(1, 2, 2, 2, 1, 1, 1),
        dilations=(1, 1, 1, 1, 1, 2, 2),
        out_indices=(1, 2, 4, 6),
        norm_cfg=norm_cfg,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(
        in_channels=320,
        channels=128,
        dilations=(1, 6, 12, 18),
        c1_in_channels=24,
        c1_channels=48,
        norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=96, channels=64, norm_cfg=norm_cfg))
