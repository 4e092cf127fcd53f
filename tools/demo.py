# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""The main job: ResEnsemble-DDPM end to end, E2E learner vs ensemble.

With no argument it needs no data and no network: it generates a small
multi-class data set deterministically, trains a small E2E learner with
MMSeg's runner, builds the E2E output cache, trains ResEnsemble on top of
the frozen E2E learner, evaluates both learners on held-out images, prints
per-class IoU and the time of each stage, and saves one picture per sample
(image | ground truth | E2E | ResEnsemble | uncertainty).

    python tools/demo.py                       # the generated data set
    python tools/demo.py --data-root ../shared/data/camvid

A stage whose output exists in ``--work-dir`` is reused, so a second run
only evaluates.
"""
import argparse
import os
import os.path as osp
import subprocess
import sys
import time
from collections import OrderedDict

import cv2
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

import mmseg_resensemble  # noqa: F401
from mmseg_resensemble.benchmarking import (evaluate_learners,
                                            format_iou_table, load_resensemble,
                                            load_run_config, side_by_side,
                                            train_or_reuse)
from mmseg_resensemble.datasets import generate_shapes_dataset

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
# data set name -> (E2E learner config, ResEnsemble config)
CONFIGS = {
    'shapes':
    ('configs/e2e/fcn_m-v2-d8_1xb8-1k_shapes-96x128.py', 'configs/resensemble/'
     'resensemble-cached_fcn-m-v2-d8_1xb8-2k_shapes-96x128.py'),
    'camvid': ('configs/e2e/deeplabv3plus_m-v2-d8_1xb8-1k_camvid-360x480.py',
               'configs/resensemble/'
               'resensemble_deeplabv3plus-m-v2-d8_1xb8-1k_camvid-360x480.py'),
    'drive': ('configs/e2e/deeplabv3plus_m-v2-d8_1xb8-1k_drive-128x128.py',
              'configs/resensemble/'
              'resensemble_deeplabv3plus-m-v2-d8_1xb8-1k_drive-128x128.py'),
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--data-root',
        help='a data set in MMSeg layout (img_dir/, ann_dir/); without it '
        'a small data set is generated')
    parser.add_argument(
        '--dataset',
        choices=sorted(CONFIGS),
        help='which configs to use (default: from --data-root\'s name)')
    parser.add_argument(
        '--work-dir', default='work_dirs/demo', help='outputs go here')
    parser.add_argument(
        '--e2e-iters', type=int, help='override the E2E training length')
    parser.add_argument(
        '--res-iters', type=int, help='override the ResEnsemble training')
    parser.add_argument(
        '--num-samples',
        type=int,
        default=4,
        help='diffusion samples per image (their spread is the uncertainty)')
    parser.add_argument(
        '--num-pictures', type=int, default=8, help='pictures to save')
    parser.add_argument(
        '--paper-sampler',
        action='store_true',
        help='also evaluate with DDPM over all T steps (Algorithm 2)')
    return parser.parse_args()


PRETRAINED = 'work_dirs/pretrained/mobilenet_v2_mmseg.pth'
TORCHVISION_WEIGHTS = osp.join(ROOT, '..', 'shared', 'weights',
                               'mobilenet_v2-b0353104.pth')


def ensure_pretrained_backbone() -> None:
    """The real-data E2E configs start from ImageNet MobileNetV2 weights,
    converted from torchvision's layout (tools/model_converters)."""
    if osp.isfile(PRETRAINED):
        return
    if not osp.isfile(TORCHVISION_WEIGHTS):
        raise FileNotFoundError(
            f'{PRETRAINED} is missing; convert torchvision\'s ImageNet '
            'MobileNetV2 weights with python tools/model_converters/'
            f'mobilenetv2_torchvision2mmseg.py SRC {PRETRAINED}')
    subprocess.run([
        sys.executable,
        osp.join(ROOT, 'tools', 'model_converters',
                 'mobilenetv2_torchvision2mmseg.py'), TORCHVISION_WEIGHTS,
        PRETRAINED
    ],
                   check=True)


def dataset_name(args) -> str:
    if args.dataset:
        return args.dataset
    if args.data_root is None:
        return 'shapes'
    name = osp.basename(osp.normpath(args.data_root)).lower()
    if name not in CONFIGS:
        raise ValueError(
            f'cannot tell the data set of --data-root {args.data_root!r}; '
            f'pass --dataset, one of {sorted(CONFIGS)}')
    return name


def save_picture(path: str, result, palette) -> None:
    """image | ground truth | E2E | ResEnsemble | uncertainty."""
    cv2.imwrite(path,
                side_by_side(cv2.imread(result.img_path), result, palette))


def evaluate(res_cfg: Config,
             ckpt: str,
             args,
             picture_dir: str = None,
             **test_cfg):
    """Both learners on the test split; returns the confusion counter."""
    model = load_resensemble(res_cfg, ckpt, **test_cfg)
    loader = Runner.build_dataloader(res_cfg.test_dataloader)
    meta = loader.dataset.metainfo
    saved = []

    def on_sample(batch, result):
        if picture_dir is None or len(saved) >= args.num_pictures:
            return
        name = osp.splitext(osp.basename(result.img_path))[0]
        path = osp.join(picture_dir, f'{name}.png')
        save_picture(path, result, meta['palette'])
        saved.append(path)

    if picture_dir is not None:
        os.makedirs(picture_dir, exist_ok=True)
    counter = evaluate_learners(
        model, loader, len(meta['classes']), on_sample=on_sample)
    return counter, meta['classes'], saved


def main():
    args = parse_args()
    init_default_scope('mmseg')
    name = dataset_name(args)
    work_dir = osp.abspath(args.work_dir)
    times = OrderedDict()

    start = time.perf_counter()
    if args.data_root is None:
        data_root = generate_shapes_dataset(
            osp.join(work_dir, 'data', 'shapes'),
            dict(train=200, val=50),
            seed=0)
    else:
        data_root = osp.abspath(args.data_root)
        ensure_pretrained_backbone()
    times['data'] = time.perf_counter() - start

    e2e_path, res_path = CONFIGS[name]
    e2e_cfg = load_run_config(
        osp.join(ROOT, e2e_path), data_root, osp.join(work_dir, 'e2e'),
        args.e2e_iters)
    start = time.perf_counter()
    e2e_ckpt, _ = train_or_reuse(e2e_cfg)
    times['train E2E learner'] = time.perf_counter() - start

    res_cfg = load_run_config(
        osp.join(ROOT, res_path), data_root, osp.join(work_dir, 'resensemble'),
        args.res_iters)
    res_cfg.model.e2e = osp.join(ROOT, e2e_path)
    res_cfg.model.e2e_checkpoint = e2e_ckpt
    start = time.perf_counter()
    res_ckpt, cache = train_or_reuse(res_cfg)
    seconds = time.perf_counter() - start
    if cache is not None:
        times[f'build E2E cache ({cache["computed"]} images)'] = cache[
            'seconds']
        seconds -= cache['seconds']
    times['train ResEnsemble'] = seconds

    start = time.perf_counter()
    picture_dir = osp.join(work_dir, 'pictures')
    counter, classes, pictures = evaluate(
        res_cfg, res_ckpt, args, picture_dir, num_samples=args.num_samples)
    test_cfg = res_cfg.model.test_cfg
    sampler = (f"{test_cfg.sampler.upper()}-{test_cfg.get('num_steps')}"
               f'x{args.num_samples}')
    columns = OrderedDict([('E2E', counter.iou('e2e')),
                           (f'ResEns {sampler}', counter.iou('resensemble'))])
    times[f'evaluate ({sampler})'] = time.perf_counter() - start
    if args.paper_sampler:
        start = time.perf_counter()
        paper, _, _ = evaluate(
            res_cfg,
            res_ckpt,
            args,
            sampler='ddpm',
            num_steps=None,
            num_samples=1)
        columns['ResEns DDPM-T'] = paper.iou('resensemble')
        times['evaluate (DDPM, all T steps)'] = time.perf_counter() - start

    print('\n' + format_iou_table(classes, columns))
    print('\nstage'.ljust(34) + 'seconds')
    for stage, seconds in times.items():
        print(f'{stage:33s}{seconds:8.1f}')
    print(f'\n{len(pictures)} pictures (image | ground truth | E2E | '
          f'ResEnsemble | uncertainty) in {picture_dir}')


if __name__ == '__main__':
    main()
