# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""Segment single images with a trained ResEnsemble model.

    python tools/infer.py CONFIG CHECKPOINT IMAGE [IMAGE ...] --out DIR

For each image, writes ``DIR/NAME.png`` (the ensemble's label map, one
channel, class indices), ``DIR/NAME_e2e.png`` (the E2E learner's) and
``DIR/NAME_vis.png`` (image | E2E | ResEnsemble | uncertainty). The E2E
weights come from CHECKPOINT, so the config's ``e2e_checkpoint`` is not
needed.
"""
import argparse
import os
import os.path as osp

import cv2
import numpy as np
from mmengine.config import DictAction
from mmseg.apis import inference_model, init_model

import mmseg_resensemble  # noqa: F401
from mmseg_resensemble.apis import side_by_side


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('config', help='ResEnsemble config file')
    parser.add_argument('checkpoint', help='ResEnsemble checkpoint')
    parser.add_argument('images', nargs='+', help='image files')
    parser.add_argument('--out', required=True, help='output folder')
    parser.add_argument(
        '--device', default='cpu', help='e.g. cpu or cuda:0 (default cpu)')
    parser.add_argument(
        '--num-samples',
        type=int,
        help='diffusion samples per image (uncertainty needs >= 2)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, as in tools/test.py')
    return parser.parse_args()


def main():
    args = parse_args()
    options = dict(args.cfg_options or {})
    options.setdefault('model.e2e_checkpoint', None)
    if args.num_samples is not None:
        options['model.test_cfg.num_samples'] = args.num_samples
    model = init_model(
        args.config, args.checkpoint, device=args.device, cfg_options=options)
    palette = model.dataset_meta['palette']
    os.makedirs(args.out, exist_ok=True)
    for path in args.images:
        img = cv2.imread(path)
        if img is None:
            raise FileNotFoundError(f'cannot read image {path!r}')
        result = inference_model(model, img)
        name = osp.splitext(osp.basename(path))[0]
        for suffix, field in (('', result.pred_sem_seg),
                              ('_e2e', result.e2e_pred_sem_seg)):
            label = field.data.squeeze(0).cpu().numpy().astype(np.uint8)
            cv2.imwrite(osp.join(args.out, f'{name}{suffix}.png'), label)
        cv2.imwrite(
            osp.join(args.out, f'{name}_vis.png'),
            side_by_side(img, result, palette))
        print(f'{path} -> {osp.join(args.out, name)}.png, '
              f'{name}_e2e.png, {name}_vis.png')


if __name__ == '__main__':
    main()
