# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""Segment images with a trained ResEnsemble model.

    python tools/infer.py CONFIG CHECKPOINT IMAGE_OR_DIR [...] --out DIR

For each image (a folder stands for the images directly in it), writes
``DIR/NAME.png`` (the ensemble's label map, one channel, class indices),
``DIR/NAME_e2e.png`` (the E2E learner's) and ``DIR/NAME_vis.png`` (image |
E2E | ResEnsemble | uncertainty). NAME is the image's name without its
extension; inputs that share a name (``a/x.png b/x.png``) are told apart by
their folders (``a_x``, ``b_x``). Nothing is written when an output would
replace an input. An image that cannot be read or segmented is named and
skipped; the tool then exits with an error listing them. The E2E weights
come from CHECKPOINT, so the config's ``e2e_checkpoint`` is not needed; a
checkpoint that leaves weights of the model unloaded is refused.
"""
import argparse
import os
import os.path as osp
import sys
from collections import defaultdict
from typing import Dict, List

import cv2
import numpy as np
from mmengine.config import DictAction
from mmseg.apis import inference_model, init_model

import mmseg_resensemble  # noqa: F401
from mmseg_resensemble.benchmarking import side_by_side
from mmseg_resensemble.utils import (check_checkpoint_covers_model,
                                     read_checkpoint)

IMAGE_EXTENSIONS = ('.bmp', '.jpeg', '.jpg', '.png', '.tif', '.tiff', '.webp')
OUTPUT_SUFFIXES = ('', '_e2e', '_vis')


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    parser.add_argument('config', help='ResEnsemble config file')
    parser.add_argument('checkpoint', help='ResEnsemble checkpoint')
    parser.add_argument(
        'images', nargs='+', help='image files, or folders of images')
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


def list_images(inputs: List[str]) -> List[str]:
    """The image files: the files given, and the images (by extension)
    directly in the folders given; each file once.

    Raises:
        FileNotFoundError: An input that does not exist.
        ValueError: A folder without images, or no images at all.
    """
    images, seen = [], set()
    for path in inputs:
        if osp.isdir(path):
            found = sorted(
                osp.join(path, name) for name in os.listdir(path)
                if name.lower().endswith(IMAGE_EXTENSIONS)
                and osp.isfile(osp.join(path, name)))
            if not found:
                raise ValueError(f'folder {path!r} holds no images '
                                 f'({", ".join(IMAGE_EXTENSIONS)})')
        elif osp.isfile(path):
            found = [path]
        else:
            raise FileNotFoundError(f'input {path!r} does not exist')
        for image in found:
            if osp.realpath(image) not in seen:
                seen.add(osp.realpath(image))
                images.append(image)
    return images


def output_names(images: List[str]) -> Dict[str, str]:
    """A distinct output name for each image: its name without extension,
    and for images that share one, the folders that tell them apart
    (``a/x.png``, ``b/x.png`` -> ``a_x``, ``b_x``), then the extension.

    Raises:
        ValueError: When two images would still write the same file.
    """
    names = {p: osp.splitext(osp.basename(p))[0] for p in images}

    def disambiguate(rename):
        groups = defaultdict(list)
        for path, name in names.items():
            groups[name].append(path)
        for paths in groups.values():
            if len(paths) > 1:
                for path in paths:
                    names[path] = rename(path, paths)

    def by_folder(path, paths):
        common = osp.commonpath([osp.abspath(p) for p in paths])
        rel = osp.relpath(osp.splitext(osp.abspath(path))[0], common)
        return rel.replace(os.sep, '_')

    disambiguate(by_folder)
    disambiguate(lambda path, _: f'{names[path]}_'
                 f'{osp.splitext(path)[1].lstrip(".")}')
    outputs = defaultdict(list)
    for path, name in names.items():
        for suffix in OUTPUT_SUFFIXES:
            outputs[f'{name}{suffix}.png'].append(path)
    clashes = {out: paths for out, paths in outputs.items() if len(paths) > 1}
    if clashes:
        raise ValueError(f'these inputs would write the same output: '
                         f'{clashes}; rename them')
    return names


def check_no_overwrite(images: List[str], names: Dict[str, str],
                       out_dir: str) -> None:
    """Raise ``ValueError`` when an output would replace an input."""
    inputs = {osp.realpath(p): p for p in images}
    clashes = [(inputs[osp.realpath(osp.join(out_dir, f'{n}{s}.png'))],
                osp.join(out_dir, f'{n}{s}.png')) for n in names.values()
               for s in OUTPUT_SUFFIXES
               if osp.realpath(osp.join(out_dir, f'{n}{s}.png')) in inputs]
    if clashes:
        raise ValueError(
            f'refusing to write over input images: {clashes[:5]} (input, '
            'output); choose another --out folder')


def segment(model, path: str, out_dir: str, name: str, palette) -> None:
    """Segment one image and write its three outputs."""
    img = cv2.imread(path)
    if img is None:
        raise ValueError('cannot be read as an image')
    result = inference_model(model, img)
    for suffix, field in (('', result.pred_sem_seg),
                          ('_e2e', result.e2e_pred_sem_seg)):
        label = field.data.squeeze(0).cpu().numpy().astype(np.uint8)
        cv2.imwrite(osp.join(out_dir, f'{name}{suffix}.png'), label)
    cv2.imwrite(
        osp.join(out_dir, f'{name}_vis.png'),
        side_by_side(img, result, palette))


def main():
    args = parse_args()
    images = list_images(args.images)
    names = output_names(images)
    check_no_overwrite(images, names, args.out)
    options = dict(args.cfg_options or {})
    options.setdefault('model.e2e_checkpoint', None)
    if args.num_samples is not None:
        options['model.test_cfg.num_samples'] = args.num_samples
    checkpoint = read_checkpoint(args.checkpoint)
    model = init_model(
        args.config, args.checkpoint, device=args.device, cfg_options=options)
    check_checkpoint_covers_model(model, checkpoint, args.checkpoint)
    del checkpoint
    palette = model.dataset_meta['palette']
    os.makedirs(args.out, exist_ok=True)
    failed = []
    for path in images:
        name = names[path]
        try:
            segment(model, path, args.out, name, palette)
        except Exception as e:  # a bad file must not stop the others
            failed.append(f'{path}: {type(e).__name__}: {e}'.strip())
            print(f'failed: {failed[-1]}', file=sys.stderr)
            continue
        print(f'{path} -> {osp.join(args.out, name)}.png, '
              f'{name}_e2e.png, {name}_vis.png')
    if failed:
        sys.exit(f'{len(failed)} of {len(images)} images failed:\n  ' +
                 '\n  '.join(failed))


if __name__ == '__main__':
    main()
