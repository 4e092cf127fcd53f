# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""Convert torchvision's ImageNet MobileNetV2 to MMSeg's backbone keys.

Example (the file the MobileNetV2 configs of this project load)::

    python tools/model_converters/mobilenetv2_torchvision2mmseg.py \\
        ../shared/weights/mobilenet_v2-b0353104.pth \\
        work_dirs/pretrained/mobilenet_v2_mmseg.pth
"""
import argparse
import os.path as osp

import mmengine
import torch
from mmengine.runner import CheckpointLoader

from mmseg_resensemble.utils.mobilenetv2_converter import convert_mobilenetv2


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Convert keys in torchvision pretrained MobileNetV2 '
        'to the MMSegmentation MobileNetV2 backbone style.')
    parser.add_argument('src', help='src model path or url')
    # The dst path must be a full path of the new checkpoint.
    parser.add_argument('dst', help='save path')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    checkpoint = CheckpointLoader.load_checkpoint(args.src, map_location='cpu')
    if 'state_dict' in checkpoint:
        state_dict = checkpoint['state_dict']
    elif 'model' in checkpoint:
        state_dict = checkpoint['model']
    else:
        state_dict = checkpoint
    state_dict = {
        k[len('module.'):] if k.startswith('module.') else k: v
        for k, v in state_dict.items()
    }
    weight = convert_mobilenetv2(state_dict)
    mmengine.mkdir_or_exist(osp.dirname(osp.abspath(args.dst)))
    torch.save(weight, args.dst)
    print(f'converted {len(state_dict)} keys into {len(weight)} MMSeg '
          f'MobileNetV2 backbone keys: {args.dst}')


if __name__ == '__main__':
    main()
