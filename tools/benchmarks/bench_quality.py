# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""Does the ensemble beat its E2E learner, and the cheaper alternatives?

Two modes.

**Any data set in MMSeg's folder layout** (``--data-root DIR``: ``img_dir/``
and ``ann_dir/`` with ``train/`` and ``test/``, optionally ``val/``,
one-channel index labels with 255 = ignore, ``classes.txt`` one name a
line; suffixes found or given). The suite

1. trains the E2E learner, DeepLabV3+ on an ImageNet MobileNetV2 (output
   stride 16, 128-channel decoder,
   ``configs/_base_/models/deeplabv3plus_m-v2-d16.py``; random weights
   when ``--pretrained`` is absent), ``--e2e-iters`` iterations on
   ``train``;
2. trains each ``--variants`` head on top of it, ``--iters`` iterations,
   x̂0 from the E2E cache (built once, shared by all runs):

   * ``resensemble``: the shipped recipe (x̄0-prediction);
   * ``paper``: the paper's ε-prediction, scored with one DDIM step and
     with Algorithm 2 over all T steps (``ddpm``) on ``--ddpm-images``
     evenly spaced test images, beside the E2E learner on those images;
   * ``refiner-ce``: the same network trained with cross-entropy on x̂0
     (:class:`E2ERefinerHead`), no diffusion;
   * ``plain-ddpm``: a conditional DDPM generating x0 from the features,
     no residual, no x̂0 input, no ensemble;
   * ``resensemble-oof``: the shipped recipe on out-of-fold residuals:
     ``--folds`` K more E2E learners, each trained without every K-th
     training image, give x̂0 of the images they did not see (the E2E
     learner trained on all images still gives x̂0 at test time);

3. trains the E2E learner on for as long as the first variant's first
   seed took (its E2E cache included), the compute-matched alternative
   (``e2e-longer``: ``load_from`` the E2E learner, the same schedule over
   the extra iterations);
4. scores every run on ``test`` in one pass per run (the frozen features
   computed once per image for all samplers) and prints and writes mIoU,
   per-class IoU and, for two-class sets, the foreground IoU and Dice.

Every run is an MMSeg config file in its folder (``WORK_DIR/<run>/
config.py``); runs whose final checkpoint exists are reused.

**The generated shapes set** (no ``--data-root``): the FCN E2E learner and
the shapes configs; variants ``cached-sample`` (the configs' default),
``onthefly-sample``, ``cached-epsilon``, ``cached-v``, ``refiner-ce``,
``plain-ddpm``.

Samplers: ``ddim-K`` (K DDIM steps), ``ddim-KxS`` (S samples averaged),
``ddpm`` (Algorithm 2 over all T steps). ``--cfg-options`` changes every
ResEnsemble config (not the E2E learner's), for example a smaller head;
its runs get their own folders.

Examples (docs/benchmarks.md has the measured ones)::

    python tools/benchmarks/bench_quality.py --data-root data/camvid \\
        --scale 480 360 --crop 180 240 --e2e-iters 1500 --iters 600 \\
        --variants resensemble refiner-ce plain-ddpm paper \\
        --seeds 0 1 2 --ablation-seeds 0 \\
        --samplers ddim-1 ddim-2 ddim-4 ddim-10 ddim-1x4 \\
        --work-dir work_dirs/bench_quality/camvid \\
        --out work_dirs/bench_quality/camvid.json
    python tools/benchmarks/bench_quality.py --seeds 0 1 2 \\
        --variants cached-sample cached-epsilon onthefly-sample \\
        --ablation-seeds 0 --samplers ddim-1 ddim-4 ddim-10 ddim-4x4 \\
        --out work_dirs/bench_quality/shapes.json
"""
import argparse
import contextlib
import copy
import json
import logging
import math
import os
import os.path as osp
import pprint
import re
import statistics
import time
from typing import Optional, Tuple

import numpy as np
import torch
from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from mmengine.registry import init_default_scope
from mmengine.runner import Runner, load_checkpoint

import mmseg_resensemble  # noqa: F401
from mmseg_resensemble.benchmarking import (ConfusionCounter,
                                            evaluate_learners,
                                            final_checkpoint, load_resensemble,
                                            load_run_config, train_or_reuse)
from mmseg_resensemble.benchmarking.figures import (lines_figure,
                                                    per_class_iou_figure,
                                                    reliability_figure)
from mmseg_resensemble.datasets import generate_shapes_dataset
from mmseg_resensemble.datasets.folder_layout import (folder_dataset,
                                                      inspect_folder,
                                                      write_split_file)
from mmseg_resensemble.evaluation import (CalibrationCounter,
                                          ErrorDetectionCounter,
                                          probs_from_logits)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = {
    'shapes':
    dict(
        e2e='configs/e2e/fcn_m-v2-d8_1xb8-1k_shapes-96x128.py',
        plain='configs/resensemble/'
        'resensemble_fcn-m-v2-d8_1xb8-2k_shapes-96x128.py',
        cached='configs/resensemble/'
        'resensemble-cached_fcn-m-v2-d8_1xb8-2k_shapes-96x128.py'),
}
VARIANTS = {
    'cached-sample': ('cached', 'sample'),
    'onthefly-sample': ('plain', 'sample'),
    'cached-epsilon': ('cached', 'epsilon'),
    'cached-v': ('cached', 'v'),
    'plain-ddpm': ('plain', 'sample'),
    'refiner-ce': ('plain', 'sample'),
}
# changes of the head per variant, beside prediction_type
HEAD_OPTIONS = {
    'plain-ddpm': dict(residual_target=False, condition_on_e2e=False),
    'refiner-ce': dict(type='E2ERefinerHead'),
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--dataset', default='shapes', choices=CONFIGS)
    parser.add_argument(
        '--data-root',
        help='a data set in MMSeg\'s folder layout (img_dir/, ann_dir/ with '
        'train/ and test/, optionally val/, and classes.txt); default: '
        'generate the shapes data set')
    parser.add_argument('--img-suffix', help='default: found in the folder')
    parser.add_argument(
        '--seg-map-suffix', help='default: found in the folder')
    parser.add_argument(
        '--scale',
        type=int,
        nargs=2,
        metavar=('W', 'H'),
        help='--data-root: test images are resized to this (keeping their '
        'aspect ratio); training rescales 0.5-2x around it. Default: the '
        'images\' own size')
    parser.add_argument(
        '--crop',
        type=int,
        nargs=2,
        metavar=('H', 'W'),
        help='--data-root: training crop (default: the image size)')
    parser.add_argument(
        '--slide',
        action='store_true',
        help='--data-root: the E2E learner (and so ResEnsemble) infers '
        'over sliding windows of the crop size, with a stride of 2/3 of '
        'it, rather than on the whole image')
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument(
        '--pretrained',
        default=PRETRAINED,
        help='--data-root: torchvision ImageNet MobileNetV2 weights for the '
        'E2E learner (converted once); "none" for random weights')
    parser.add_argument('--work-dir', default='work_dirs/bench_quality')
    parser.add_argument(
        '--variants',
        nargs='+',
        help='shapes: ' + ', '.join(sorted(VARIANTS)) + '; --data-root: ' +
        ', '.join(FOLDER_VARIANTS) + ', each optionally followed by '
        'changes "+C" (e.g. resensemble+ce+tsampler), C one of ' +
        ', '.join(CHANGES))
    parser.add_argument(
        '--seeds',
        type=int,
        nargs='+',
        default=[0, 1, 2],
        help='seeds of the first variant')
    parser.add_argument(
        '--ablation-seeds',
        type=int,
        nargs='+',
        help='seeds of the other variants (default: --seeds)')
    parser.add_argument(
        '--samplers',
        nargs='+',
        help='of the first variant (default: ddim-1 ddim-4 ddim-4x4; '
        'ddim-1 with --quick)')
    parser.add_argument(
        '--ablation-samplers',
        nargs='+',
        default=['ddim-1'],
        help='--data-root: of the other variants ("paper" always adds '
        'ddpm)')
    parser.add_argument(
        '--ddpm-images',
        type=int,
        default=24,
        help='--data-root: the ddpm sampler (all T steps) is scored on this '
        'many test images, evenly spaced (0: not at all)')
    parser.add_argument(
        '--no-matched',
        dest='matched',
        action='store_false',
        help='--data-root: skip the compute-matched E2E learner')
    parser.add_argument('--e2e-iters', type=int)
    parser.add_argument('--iters', '--res-iters', dest='res_iters', type=int)
    parser.add_argument('--out', help='JSON results')
    parser.add_argument(
        '--folds',
        type=int,
        default=3,
        help='--variants resensemble-oof: the number K of out-of-fold E2E '
        'learners, each trained on all training images but every K-th')
    parser.add_argument(
        '--eval-split',
        default='test',
        help='the split every run is scored on (--data-root): test, or val '
        'to choose settings (say, an ensemble weight) before the test split')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        default={},
        help='key=value changes of the ResEnsemble configs, as in '
        'tools/train.py')
    parser.add_argument(
        '--max-images',
        type=int,
        help='--data-root: score every run on this many evenly spaced '
        'images of the split only (default: all)')
    parser.add_argument(
        '--uncertainty',
        action='store_true',
        help='--data-root: also measure the calibration (ECE over 15 '
        'bins, NLL, Brier) of every prediction and how well uncertainty '
        'scores find its wrong pixels (AUROC, AUPRC)')
    parser.add_argument(
        '--error-pixels',
        type=int,
        default=4000,
        help='--uncertainty: random labelled pixels per test image for the '
        'AUROC and AUPRC (the same pixels for every prediction)')
    parser.add_argument(
        '--train-only',
        action='store_true',
        help='--data-root: train (or reuse) every run, score none')
    parser.add_argument(
        '--quick',
        action='store_true',
        help='smoke run: 4 training iterations, seed 0, ddim-1 (and tiny '
        'data for the shapes set)')
    args = parser.parse_args()
    if args.variants is None:
        args.variants = ['resensemble'
                         ] if args.data_root else ['cached-sample']
    for variant in args.variants:
        if not (known_variant(variant)
                if args.data_root else variant in VARIANTS):
            known = (f'{sorted(FOLDER_VARIANTS)}, each optionally with '
                     f'+changes of {sorted(CHANGES)}'
                     if args.data_root else f'{sorted(VARIANTS)}')
            parser.error(f'--variants {variant!r} is not one of {known}')
    if args.data_root:
        args.e2e_iters = args.e2e_iters or 1000
        args.res_iters = args.res_iters or 1000
    if args.quick:
        args.e2e_iters = args.res_iters = 4
        args.seeds, args.ablation_seeds = [0], [0]
        args.samplers = args.samplers or ['ddim-1']
        args.ablation_samplers = ['ddim-1']
        args.ddpm_images = 1
        args.batch_size = 2
    args.iters = args.res_iters
    args.samplers = args.samplers or ['ddim-1', 'ddim-4', 'ddim-4x4']
    for name in args.samplers + args.ablation_samplers:
        sampler_cfg(name)  # fail early on a typo
    return args


def sampler_cfg(name: str) -> dict:
    """The test_cfg of a sampler name: ``ddpm`` (all T steps), ``ddim-K``
    (K steps) or ``ddim-KxS`` (S samples averaged), a DDIM name optionally
    followed by ``-etaE`` (DDIM's η: 0 deterministic, 1 DDPM-like noise),
    then any name by ``-fromT'`` (truncated diffusion from x̂0 noised to
    step T') and ``-wW`` (ensemble weight W instead of Eq. 15's ½)."""
    match = re.fullmatch(
        r'(?:(ddpm)|ddim-(\d+)(?:x(\d+))?(?:-eta(\d*\.?\d+))?)'
        r'(?:-from(\d+))?(?:-w(\d*\.?\d+))?', name)
    if match is None:
        raise ValueError(f'sampler {name!r} is not ddpm, ddim-K or ddim-KxS, '
                         "optionally followed by -etaE (DDIM), -fromT' and "
                         '-wW')
    ddpm, steps, samples, eta, start, weight = match.groups()
    cfg = dict(
        sampler='ddpm', num_steps=None, num_samples=1) if ddpm else dict(
            sampler='ddim',
            num_steps=int(steps),
            num_samples=int(samples or 1))
    if eta:
        cfg['eta'] = float(eta)
    if start:
        cfg['start_step'] = int(start)
    if weight:
        cfg['ensemble_weight'] = float(weight)
    return cfg


def run_suffix(cfg_options: dict) -> str:
    """The folder-name suffix of runs with ``--cfg-options``."""
    return ''.join(f'_{key}={value}'.replace('/', '-').replace(' ', '')
                   for key, value in sorted(cfg_options.items()))


def mean_std(values, digits: int = 2):
    if len(values) == 1:
        return f'{values[0]:.{digits}f}'
    return (f'{statistics.mean(values):.{digits}f} ± '
            f'{statistics.stdev(values):.{digits}f}')


def main():
    args = parse_args()
    init_default_scope('mmseg')
    if args.data_root:
        run_folder_suite(args)
        return
    paths = CONFIGS[args.dataset]
    work_dir = osp.abspath(args.work_dir)
    splits = dict(train=8, val=4) if args.quick else dict(train=200, val=50)
    data_root = generate_shapes_dataset(
        osp.join(work_dir, 'data', 'shapes'), splits, seed=0)
    e2e_cfg = load_run_config(
        osp.join(ROOT, paths['e2e']),
        data_root,
        osp.join(work_dir, 'e2e'),
        args.e2e_iters,
        seed=0)
    e2e_ckpt, _ = train_or_reuse(e2e_cfg)

    results = dict(
        dataset=args.dataset,
        date=time.strftime('%Y-%m-%d %H:%M %Z'),
        e2e_config=paths['e2e'],
        cfg_options=args.cfg_options,
        runs=[])
    e2e_miou = None
    for index, variant in enumerate(args.variants):
        config_key, prediction_type = VARIANTS[variant]
        seeds = args.seeds if index == 0 else (args.ablation_seeds
                                               or args.seeds)
        for seed in seeds:
            run_name = f'{variant}_seed{seed}{run_suffix(args.cfg_options)}'
            cfg = load_run_config(
                osp.join(ROOT, paths[config_key]), data_root,
                osp.join(work_dir, run_name), args.res_iters, seed)
            cfg.model.e2e = osp.join(ROOT, paths['e2e'])
            cfg.model.e2e_checkpoint = e2e_ckpt
            cfg.model.decode_head.diffusion.prediction_type = prediction_type
            cfg.model.decode_head.update(HEAD_OPTIONS.get(variant, {}))
            cfg.merge_from_dict(args.cfg_options)
            start = time.perf_counter()
            ckpt, _ = train_or_reuse(cfg)
            train_s = time.perf_counter() - start
            loader = Runner.build_dataloader(cfg.test_dataloader)
            classes = loader.dataset.metainfo['classes']
            for name in args.samplers:
                model = load_resensemble(cfg, ckpt, **sampler_cfg(name))
                start = time.perf_counter()
                counter = evaluate_learners(model, loader, len(classes))
                run = dict(
                    variant=variant,
                    seed=seed,
                    sampler=name,
                    mIoU=float(np.nanmean(counter.iou('resensemble'))),
                    IoU=counter.iou('resensemble').tolist(),
                    e2e_mIoU=float(np.nanmean(counter.iou('e2e'))),
                    e2e_IoU=counter.iou('e2e').tolist(),
                    eval_seconds=time.perf_counter() - start,
                    train_seconds=train_s)
                e2e_miou = run['e2e_mIoU']
                results['runs'].append(run)
                print(
                    f'{variant} seed {seed} {name}: mIoU '
                    f'{run["mIoU"]:.2f} (E2E {e2e_miou:.2f})',
                    flush=True)
            results['classes'] = list(classes)

    print(f'\n{"":34s}{"mIoU (mean ± std over seeds)":>30s}')
    print(f'{"E2E learner alone":34s}{e2e_miou:30.2f}')
    for variant in args.variants:
        for name in args.samplers:
            values = [
                r['mIoU'] for r in results['runs']
                if r['variant'] == variant and r['sampler'] == name
            ]
            seeds = len(values)
            print(f'{variant + " " + name:34s}{mean_std(values):>30s}'
                  f'  ({seeds} seed{"s" if seeds > 1 else ""})')
    if args.out:
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            json.dump(results, f, indent=2)


# ----------------------------------------------------------------------
# any data set in MMSeg's folder layout (--data-root)
# ----------------------------------------------------------------------
E2E_MODEL = 'configs/_base_/models/deeplabv3plus_m-v2-d16.py'
E2E_SCHEDULE = 'configs/_base_/schedules/schedule_1k.py'
RES_BASES = ('configs/_base_/models/resensemble_residual-diffusion.py',
             'configs/_base_/resensemble_runtime.py',
             'configs/_base_/schedules/resensemble_adamw_1k.py')
#: without a validation split, every this-many-th training image is held
#: out of the head's training to choose the ensemble weight on
HOLD_OUT_EVERY = 5
PRETRAINED = osp.join(
    osp.dirname(ROOT), 'shared', 'weights', 'mobilenet_v2-b0353104.pth')
# the ResEnsemble head variants: changes of the shipped head
FOLDER_VARIANTS = {
    'resensemble': dict(),
    # the same head on out-of-fold x̂0 (E2ECacheHook's out_of_fold)
    'resensemble-oof': dict(),
    'paper': dict(diffusion=dict(prediction_type='epsilon')),
    'refiner-ce': dict(type='E2ERefinerHead'),
    'plain-ddpm': dict(residual_target=False, condition_on_e2e=False),
}
#: the task losses of the ``+ce`` and ``+lovasz`` changes
CE_LOSS = dict(
    type='CrossEntropyLoss', loss_name='loss_ce', avg_non_ignore=True)
LOVASZ_LOSS = dict(
    type='LovaszLoss', loss_name='loss_lovasz', reduction='none')
#: changes a variant name adds after ``+`` (``resensemble+ce+tsampler``):
#: what each sets on the head (``decode_head``) and in ``model.train_cfg``
CHANGES = {
    # the task loss on the ensemble (the refiner has it already)
    'ce': dict(head=dict(loss_ensemble=[CE_LOSS])),
    # Lovász beside it: on the ensemble, or on the refiner's logits
    'lovasz': dict(head=dict(loss_ensemble=[CE_LOSS, LOVASZ_LOSS])),
    # training draws t from the sampler's own steps only
    'tsampler': dict(train_cfg=dict(timesteps='sampler')),
    # ... or from the noisiest fifth of the steps
    'thigh': dict(train_cfg=dict(timesteps=(801, 1000))),
    # half the batches build x̄t from the head's own first estimate
    'selfalign': dict(train_cfg=dict(self_aligned=0.5)),
    # the ensemble weight chosen on held-out images (EnsembleWeightHook)
    'guard': dict(),
}


def variant_changes(variant: str) -> Tuple[dict, dict, bool]:
    """The head changes, ``model.train_cfg`` and whether the weight is
    chosen on held-out images, of a variant name ``base+change+...``."""
    base, *changes = variant.split('+')
    head = dict(FOLDER_VARIANTS[base])
    train_cfg = dict()
    for change in changes:
        spec = CHANGES[change]
        extra = dict(spec.get('head', {}))
        if head.get('type') == 'E2ERefinerHead' and 'loss_ensemble' in extra:
            extra = dict(loss_decode=extra.pop('loss_ensemble'))
        head.update(extra)
        train_cfg.update(spec.get('train_cfg', {}))
    return head, train_cfg, 'guard' in changes


def known_variant(variant: str) -> bool:
    """Whether ``variant`` is a base of FOLDER_VARIANTS with changes of
    CHANGES."""
    base, *changes = variant.split('+')
    return base in FOLDER_VARIANTS and all(c in CHANGES for c in changes)


def write_config(path: str, bases, **variables) -> Config:
    """Write a config file inheriting ``bases`` and load it.

    Each run of the suite is a plain MMSeg config file in its folder, so
    ``tools/train.py``/``tools/test.py`` rerun it as it is.
    """
    os.makedirs(osp.dirname(path), exist_ok=True)
    lines = [
        '# written by tools/benchmarks/bench_quality.py --data-root',
        f'_base_ = {pprint.pformat(list(bases))}'
    ]
    lines += [f'{k} = {pprint.pformat(v)}' for k, v in variables.items()]
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')
    return Config.fromfile(path)


def folder_pipelines(args, layout, num_classes, cache_dir=None):
    """Train and test pipelines of the folder data set.

    The test images are resized to ``--scale`` (default: their own size);
    training crops of ``--crop`` come from images rescaled by 0.5-2x
    around it. With ``cache_dir`` the E2E outputs come from the cache and
    move with the labels; the photometric distortion, which the cached x̂0
    never saw, is left out.
    """
    scale = tuple(args.scale or layout.image_size[::-1])  # (w, h)
    crop = tuple(args.crop or layout.image_size)  # (h, w)
    train = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations'),
        dict(type='CheckImageAndLabel', num_classes=num_classes),
    ]
    if cache_dir is not None:
        train.append(dict(type='LoadE2ECache', cache_dir=cache_dir))
    train += [
        dict(
            type='RandomResize',
            scale=scale,
            ratio_range=(0.5, 2.0),
            keep_ratio=True),
        dict(type='RandomCrop', crop_size=crop, cat_max_ratio=0.75),
        dict(type='RandomFlip', prob=0.5),
    ]
    if cache_dir is None:
        train += [
            dict(type='PhotoMetricDistortion'),
            dict(type='PackSegInputs')
        ]
    else:
        train.append(dict(type='PackResEnsembleInputs'))
    test = [
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=scale, keep_ratio=True),
        dict(type='LoadAnnotations'),
        dict(type='PackSegInputs')
    ]
    return train, test, crop


def folder_data(args, layout, train_pipeline, test_pipeline, ann_file=None):
    """Data loaders: ``train`` (or the samples of ``ann_file``), ``test``.

    No validation during training: every run is scored once on the test
    split afterwards. ``test_pipeline`` is what MMSeg's ``init_model`` /
    ``inference_model`` and ``tools/infer.py`` read.
    """
    return dict(
        test_pipeline=test_pipeline,
        train_dataloader=dict(
            batch_size=args.batch_size,
            num_workers=1,
            persistent_workers=False,
            sampler=dict(type='InfiniteSampler', shuffle=True),
            dataset=folder_dataset(layout, 'train', train_pipeline, ann_file)),
        test_dataloader=dict(
            batch_size=1,
            num_workers=1,
            persistent_workers=False,
            sampler=dict(type='DefaultSampler', shuffle=False),
            dataset=folder_dataset(layout, 'test', test_pipeline)),
        val_dataloader=None,
        val_cfg=None,
        val_evaluator=None,
        test_evaluator=dict(type='IoUMetric', iou_metrics=['mIoU']))


def schedule(iters: int, seed: int, eta_min: float) -> dict:
    """A run of ``iters`` iterations: PolyLR down to ``eta_min`` (as the
    config's schedule base), one checkpoint at the end, ``seed``."""
    return dict(
        param_scheduler=[
            dict(
                type='PolyLR',
                eta_min=eta_min,
                power=0.9,
                begin=0,
                end=iters,
                by_epoch=False)
        ],
        train_cfg=dict(
            type='IterBasedTrainLoop', max_iters=iters, val_interval=iters),
        default_hooks=dict(
            checkpoint=dict(interval=iters),
            logger=dict(interval=max(1, min(50, iters // 4)))),
        randomness=dict(seed=seed),
        launcher='none')


def e2e_config(args,
               layout,
               work_dir,
               iters,
               seed=0,
               load_from=None,
               ann_file=None) -> Config:
    """The E2E learner (DeepLabV3+ MobileNetV2, output stride 16)."""
    k = len(layout.classes)
    train, test, crop = folder_pipelines(args, layout, k)
    pretrained = converted_pretrained(args)
    backbone = dict(init_cfg=dict(type='Pretrained', checkpoint=pretrained)
                    ) if pretrained else dict(init_cfg=None)
    cfg = write_config(
        osp.join(work_dir, 'config.py'), [
            osp.join(ROOT, E2E_MODEL), 'mmseg::_base_/default_runtime.py',
            osp.join(ROOT, E2E_SCHEDULE)
        ],
        custom_imports=dict(
            imports=['mmseg_resensemble'], allow_failed_imports=False),
        model=dict(
            data_preprocessor=dict(size=crop),
            test_cfg=dict(
                mode='slide',
                crop_size=crop,
                stride=tuple(
                    2 * c // 3
                    for c in crop)) if args.slide else dict(mode='whole'),
            backbone=backbone,
            decode_head=dict(num_classes=k),
            auxiliary_head=dict(num_classes=k)),
        **folder_data(args, layout, train, test, ann_file),
        load_from=load_from,
        work_dir=work_dir,
        **schedule(iters, seed, eta_min=1e-4))
    return cfg


def resensemble_config(args,
                       layout,
                       work_dir,
                       e2e_cfg_file,
                       e2e_ckpt,
                       variant,
                       seed,
                       cache_dir,
                       out_of_fold=None) -> Config:
    """The shipped ResEnsemble recipe on the folder, ``variant`` applied;
    ``out_of_fold`` as :class:`E2ECacheHook`'s."""
    k = len(layout.classes)
    train, test, _ = folder_pipelines(args, layout, k, cache_dir)
    head = dict(
        # the E2E backbone's stride-4 (24 channels) and stride-16 (320)
        # features
        in_channels=[24, 320],
        in_index=(0, 3),
        num_classes=k)
    changes, train_cfg, guard = variant_changes(variant)
    head.update(changes)
    model = dict(e2e=e2e_cfg_file, e2e_checkpoint=e2e_ckpt, decode_head=head)
    if train_cfg:
        model['train_cfg'] = train_cfg
    hooks = [
        dict(type='ResEnsembleSanityCheckHook'),
        dict(
            type='E2ECacheHook', cache_dir=cache_dir, out_of_fold=out_of_fold),
        dict(type='NonFiniteLossHook'),
        dict(type='RandomStateHook'),
    ]
    ann_file = None
    if guard:
        model['test_cfg'] = dict(ensemble_weight='auto')
        held_out, ann_file = held_out_split(layout, work_dir)
        hooks.append(
            dict(
                type='EnsembleWeightHook',
                dataloader=dict(
                    batch_size=1,
                    num_workers=0,
                    sampler=dict(type='DefaultSampler', shuffle=False),
                    dataset=folder_dataset(layout, held_out[0], test,
                                           held_out[1]))))
    cfg = write_config(
        osp.join(work_dir, 'config.py'),
        [osp.join(ROOT, b) for b in RES_BASES],
        model=model,
        custom_hooks=hooks,
        **folder_data(args, layout, train, test, ann_file),
        work_dir=work_dir,
        **schedule(args.iters, seed, eta_min=1e-5))
    cfg.merge_from_dict(args.cfg_options)
    return cfg


def chosen_weight(model) -> Optional[float]:
    """The ensemble weight EnsembleWeightHook chose, if any."""
    value = getattr(model.decode_head, 'chosen_ensemble_weight', None)
    if value is None or float(value) < 0:  # none chosen
        return None
    return float(value)


def held_out_split(layout, work_dir) -> Tuple[tuple, Optional[str]]:
    """Where the ensemble weight is chosen: the validation split when the
    data set has one; else every fifth training image (in name order),
    which the head then does not train on. Never the test split.

    Returns:
        tuple: ``(split, ann_file)`` of the held-out images for
        :func:`folder_dataset`, and the head's training ``ann_file`` (None:
        all training images).
    """
    if 'val' in layout.splits:
        return ('val', None), None
    names = layout.splits['train']
    held = write_split_file(
        osp.join(work_dir, 'held_out.txt'), names[::HOLD_OUT_EVERY])
    kept = write_split_file(
        osp.join(work_dir, 'train.txt'),
        [n for i, n in enumerate(names) if i % HOLD_OUT_EVERY])
    return ('train', held), kept


def fold_learners(args, layout, work_dir) -> list:
    """``--folds`` E2E learners, each trained as the E2E learner but
    without every ``--folds``-th training image (the images are dealt to
    the folds in name order); ``out_of_fold`` of :class:`E2ECacheHook`."""
    names = layout.splits['train']
    folds = []
    for i in range(args.folds):
        fold_dir = osp.join(work_dir, f'e2e_fold{i}of{args.folds}')
        held_out = write_split_file(
            osp.join(fold_dir, 'held_out.txt'), names[i::args.folds])
        kept = write_split_file(
            osp.join(fold_dir, 'train.txt'),
            [n for j, n in enumerate(names) if j % args.folds != i])
        cfg = e2e_config(args, layout, fold_dir, args.e2e_iters, ann_file=kept)
        ckpt, _ = timed_train(cfg)
        folds.append(dict(checkpoint=ckpt, held_out=held_out))
    return folds


def converted_pretrained(args) -> Optional[str]:
    """ImageNet MobileNetV2 weights in MMSeg's layout, when at hand."""
    if args.pretrained in (None, 'none'):
        return None
    if not osp.isfile(args.pretrained):
        print_log(
            f'no ImageNet weights at {args.pretrained}: the E2E '
            'learner starts from random weights', 'current', logging.WARNING)
        return None
    dst = osp.join(
        osp.abspath(args.work_dir), 'pretrained', 'mobilenet_v2_mmseg.pth')
    if not osp.isfile(dst):
        from mmengine.runner import CheckpointLoader

        from mmseg_resensemble.utils.mobilenetv2_converter import \
            convert_mobilenetv2
        ckpt = CheckpointLoader.load_checkpoint(
            args.pretrained, map_location='cpu')
        os.makedirs(osp.dirname(dst), exist_ok=True)
        torch.save(convert_mobilenetv2(ckpt.get('state_dict', ckpt)), dst)
    return dst


def timed_train(cfg: Config) -> Tuple[str, float]:
    """Train (or reuse) a run; its training seconds, stored beside it."""
    stamp = osp.join(cfg.work_dir, 'train_seconds.json')
    ckpt = final_checkpoint(cfg)
    if osp.isfile(ckpt) and osp.isfile(stamp):
        print_log(f'reusing {ckpt}', 'current')
        with open(stamp) as f:
            return ckpt, json.load(f)['seconds']
    start = time.perf_counter()
    _, cache = train_or_reuse(cfg)
    seconds = time.perf_counter() - start
    with open(stamp, 'w') as f:
        json.dump(dict(seconds=seconds, cache=cache), f)
    return ckpt, seconds


@contextlib.contextmanager
def features_once(model):
    """Compute the frozen E2E features of an input (or of each slide
    window) once, for every sampler scored on it; yields the function
    that forgets them (call it for each new batch)."""
    e2e = model.e2e
    original = e2e.extract_feat
    memo = {}

    def extract_feat(inputs):
        key = (inputs.data_ptr(), tuple(inputs.shape), inputs.stride())
        if key not in memo:
            memo[key] = original(inputs)
        return memo[key]

    e2e.extract_feat = extract_feat
    try:
        yield memo.clear
    finally:
        del e2e.extract_feat


def score_run(model,
              loader,
              num_classes,
              samplers,
              subset,
              uncertainty: Optional['UncertaintyStats'] = None):
    """One pass over the test split scoring every sampler of a run.

    Args:
        model: A ResEnsemble model or a plain MMSeg segmentor.
        loader: The test loader (batch size 1).
        num_classes (int): K.
        samplers (list[str]): Sampler names (``sampler_cfg``); empty for a
            plain segmentor.
        subset (set[int]): Indices of the test images the 'ddpm' sampler
            (all T steps) is scored on.
        uncertainty (UncertaintyStats, optional): Also measure calibration
            and error detection of each name.

    Returns:
        dict[str, ConfusionCounter-like]: counts per name: 'e2e' (the E2E
        learner alone), each sampler, and 'e2e@subset'.
    """
    counter = ConfusionCounter(num_classes)
    is_ensemble = hasattr(model, 'decode_head') and samplers
    # each sampler on the model's own test_cfg, not on the previous one's
    base_cfg = dict(model.test_cfg) if is_ensemble else {}
    model.eval()
    with torch.no_grad(), (features_once(model) if is_ensemble else
                           contextlib.nullcontext(lambda: None)) as forget:
        for index, batch in enumerate(loader):
            forget()
            data = model.data_preprocessor(batch, False)
            inputs, samples = data['inputs'], data['data_samples']
            label = samples[0].gt_sem_seg.data
            if uncertainty is not None:
                uncertainty.next_image(label, index)
            if not is_ensemble:
                result = model.predict(inputs, samples)[0]
                counter.add('e2e', result.pred_sem_seg.data, label)
                if uncertainty is not None:
                    uncertainty.add_plain('e2e', result)
                continue
            for n, name in enumerate(samplers):
                if name == 'ddpm' and index not in subset:
                    continue
                model.test_cfg.clear()
                model.test_cfg.update(base_cfg, **sampler_cfg(name))
                result = model.predict(inputs, samples)[0]
                counter.add(name, result.pred_sem_seg.data, label)
                if uncertainty is not None and name != 'ddpm':
                    uncertainty.add_ensemble(
                        name, result, spread=model.test_cfg['num_samples'] > 1)
                if n == 0:
                    counter.add('e2e', result.e2e_pred_sem_seg.data, label)
                    if uncertainty is not None:
                        uncertainty.add_e2e(result)
                if name == 'ddpm':
                    counter.add('e2e@subset', result.e2e_pred_sem_seg.data,
                                label)
    return counter


class UncertaintyStats:
    """Calibration (ECE, NLL, Brier) and error detection (AUROC, AUPRC of
    uncertainty scores for the wrong pixels) of each prediction of a run.

    Scores of the wrong pixels of a prediction: ``1-maxp``, one minus its
    own highest class probability; for an ensemble also ``e2e 1-maxp``, the
    same of the E2E learner (the baseline), and with several samples
    ``spread``, the ensemble's ``uncertainty`` map.

    Args:
        pixels_per_image (int): Pixels per image for error detection.
    """

    def __init__(self, pixels_per_image: int) -> None:
        self.pixels_per_image = pixels_per_image
        self.calibration = {}
        self.errors = {}
        self.label = self.pixels = self.e2e_confidence = None

    def next_image(self, label, index: int) -> None:
        self.label = label
        self.pixels = ErrorDetectionCounter(self.pixels_per_image).pixels(
            label, index)
        self.e2e_confidence = None

    def _add(self, name, probs, pred, scores) -> None:
        if name not in self.calibration:
            self.calibration[name] = CalibrationCounter()
            self.errors[name] = ErrorDetectionCounter(self.pixels_per_image)
        self.calibration[name].add(probs, self.label)
        self.errors[name].add(pred, self.label, scores, self.pixels)

    def add_plain(self, name, result) -> None:
        """A plain MMSeg segmentor's result."""
        probs = probs_from_logits(result.seg_logits.data)
        self._add(name, probs, result.pred_sem_seg.data,
                  {'1-maxp': 1 - probs.max(0)[0]})

    def add_e2e(self, result) -> None:
        """The E2E learner's own output inside a ResEnsemble result."""
        probs = probs_from_logits(result.e2e_seg_logits.data)
        self.e2e_confidence = probs.max(0)[0]
        self._add('e2e', probs, result.e2e_pred_sem_seg.data,
                  {'1-maxp': 1 - self.e2e_confidence})

    def add_ensemble(self, name, result, spread: bool) -> None:
        """A ResEnsemble (or refiner) result; its ``seg_logits`` are
        log-probabilities."""
        probs = probs_from_logits(result.seg_logits.data)
        if self.e2e_confidence is None:  # the same for every sampler
            self.e2e_confidence = probs_from_logits(
                result.e2e_seg_logits.data).max(0)[0]
        scores = {
            '1-maxp': 1 - probs.max(0)[0],
            'e2e 1-maxp': 1 - self.e2e_confidence
        }
        if spread:
            scores['spread'] = result.uncertainty.data
        self._add(name, probs, result.pred_sem_seg.data, scores)

    def summary(self, name) -> dict:
        """``calibration`` and ``error_detection`` of ``name`` (empty if it
        was not measured)."""
        if name not in self.calibration:
            return {}
        return dict(
            calibration=self.calibration[name].summary(),
            error_detection=self.errors[name].summary())


def scores(counter, name, num_classes) -> dict:
    """mIoU and per-class IoU (%, NaN: class absent); for two classes also
    the foreground (class 1) IoU and Dice."""
    iou = counter.iou(name)
    out = dict(mIoU=float(np.nanmean(iou)), IoU=iou.tolist())
    if num_classes == 2:
        inter = float(counter.intersect[name][1])
        union = float(counter.union[name][1])
        out['fg_IoU'] = 100 * inter / max(union, 1)
        out['Dice'] = 100 * 2 * inter / max(union + inter, 1)
    return out


def run_folder_suite(args):
    """The whole comparison on ``--data-root``; see the module docstring."""
    layout = inspect_folder(args.data_root, args.img_suffix,
                            args.seg_map_suffix)
    k = len(layout.classes)
    work_dir = osp.abspath(args.work_dir)
    e2e_dir = osp.join(work_dir, 'e2e')
    cfg = e2e_config(args, layout, e2e_dir, args.e2e_iters)
    e2e_ckpt, e2e_seconds = timed_train(cfg)
    e2e_cfg_file = osp.join(e2e_dir, 'config.py')
    eval_loader = copy.deepcopy(cfg.test_dataloader)
    eval_loader.dataset = folder_dataset(layout, args.eval_split,
                                         eval_loader.dataset.pipeline)
    num_eval = len(layout.splits[args.eval_split])
    if args.max_images and args.max_images < num_eval:
        # evenly spaced images of the split, the same for every run
        step = num_eval / args.max_images
        eval_loader.dataset.indices = [
            int(i * step) for i in range(args.max_images)
        ]
    loader = Runner.build_dataloader(eval_loader)
    num_test = len(loader.dataset)
    step = max(1, num_test // max(1, args.ddpm_images))
    subset = set(range(0, num_test, step)[:args.ddpm_images])
    results = dict(
        data_root=osp.abspath(args.data_root),
        date=time.strftime('%Y-%m-%d %H:%M %Z'),
        classes=layout.classes,
        scale=list(args.scale or layout.image_size[::-1]),
        crop=list(args.crop or layout.image_size),
        test_mode='slide' if args.slide else 'whole',
        eval_split=args.eval_split,
        eval_images=num_test,
        e2e_iters=args.e2e_iters,
        iters=args.iters,
        batch_size=args.batch_size,
        e2e_train_seconds=e2e_seconds,
        cfg_options=args.cfg_options,
        ddpm_images=sorted(subset),
        runs=[])

    def stats():
        return UncertaintyStats(
            args.error_pixels) if args.uncertainty else None

    def record(variant,
               seed,
               name,
               counter,
               counter_name,
               train_seconds,
               measured=None,
               **extra):
        run = dict(
            variant=variant,
            seed=seed,
            sampler=name,
            train_seconds=train_seconds,
            **scores(counter, counter_name, k),
            **(measured.summary(counter_name) if measured else {}),
            **extra)
        results['runs'].append(run)
        e2e = ''
        if counter_name != 'e2e' and 'e2e' in counter.union:
            e2e = f' (E2E {scores(counter, "e2e", k)["mIoU"]:.2f})'
        print(
            f'{variant} seed {seed} {name}: mIoU {run["mIoU"]:.2f}{e2e}',
            flush=True)

    e2e_counter = e2e_stats = None
    head_seconds = None
    shared_cache = osp.join(work_dir, 'e2e_cache')
    for index, variant in enumerate(args.variants):
        seeds = args.seeds if index == 0 else (args.ablation_seeds
                                               or args.seeds)
        samplers = args.samplers if index == 0 else args.ablation_samplers
        if variant == 'paper':
            # Algorithm 2 over all T steps, where test images are given
            samplers = ['ddim-1'] + (['ddpm'] if subset else [])
        cache_dir, out_of_fold = shared_cache, None
        if variant == 'resensemble-oof':
            out_of_fold = fold_learners(args, layout, work_dir)
            cache_dir = osp.join(work_dir, f'e2e_cache_oof{args.folds}')
        for seed in seeds:
            run_dir = osp.join(
                work_dir,
                f'{variant}_seed{seed}{run_suffix(args.cfg_options)}')
            rcfg = resensemble_config(args, layout, run_dir, e2e_cfg_file,
                                      e2e_ckpt, variant, seed, cache_dir,
                                      out_of_fold)
            ckpt, seconds = timed_train(rcfg)
            if head_seconds is None:
                head_seconds = seconds
            if args.train_only:
                continue
            model = load_resensemble(rcfg, ckpt)
            chosen = chosen_weight(model)
            measured = stats()
            counter = score_run(model, loader, k, samplers, subset, measured)
            e2e_counter, e2e_stats = counter, measured
            for name in samplers:
                extra = {} if chosen is None else dict(chosen_weight=chosen)
                if name == 'ddpm':
                    extra = dict(
                        images=len(subset),
                        e2e_on_images=scores(counter, 'e2e@subset', k))
                record(variant, seed, name, counter, name, seconds, measured,
                       **extra)
    if args.train_only:
        return
    if e2e_counter is None:  # no variant: the E2E learner alone
        e2e_stats = stats()
        e2e_counter = score_run(
            load_plain(cfg, e2e_ckpt), loader, k, [], subset, e2e_stats)
    record('e2e', 0, '-', e2e_counter, 'e2e', e2e_seconds, e2e_stats)

    if args.matched and head_seconds is not None:
        # the skeptic's alternative: the E2E learner trained on for as long
        # as the first variant's head trained
        per_iter = e2e_seconds / args.e2e_iters
        extra_iters = max(1, math.ceil(head_seconds / per_iter))
        mcfg = e2e_config(
            args,
            layout,
            osp.join(work_dir, f'e2e-longer_{extra_iters}'),
            extra_iters,
            load_from=e2e_ckpt)
        mckpt, mseconds = timed_train(mcfg)
        measured = stats()
        counter = score_run(
            load_plain(mcfg, mckpt), loader, k, [], subset, measured)
        record(
            'e2e-longer',
            0,
            '-',
            counter,
            'e2e',
            mseconds,
            measured,
            extra_iters=extra_iters)
    print_folder_tables(results, args)
    if args.uncertainty:
        print_uncertainty_tables(results)
    if args.out:
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            json.dump(results, f, indent=2)
        for path in write_quality_figures(results, osp.splitext(args.out)[0]):
            print(f'figure: {path}')


def load_plain(cfg: Config, ckpt: str):
    """A trained MMSeg segmentor in eval mode."""
    from mmseg.registry import MODELS
    model_cfg = cfg.model.copy()
    model_cfg.backbone.init_cfg = None
    model = MODELS.build(model_cfg)
    load_checkpoint(model, ckpt, map_location='cpu', logger='current')
    return model.eval()


def print_folder_tables(results, args):
    """mIoU (mean ± std over seeds) per variant and sampler, then per-class
    IoU of the E2E learner and the first variant."""
    binary = len(results['classes']) == 2
    keys = ['mIoU'] + (['fg_IoU', 'Dice'] if binary else [])
    groups = run_groups(results)
    header = f'{"":32s}' + ''.join(f'{k:>18s}' for k in keys) + '  seeds'
    print('\n' + header)
    for (variant, sampler), runs in groups.items():
        label = variant if sampler == '-' else f'{variant} {sampler}'
        if sampler == 'ddpm':
            label += f' ({runs[0]["images"]} img)'
        row = ''.join(f'{mean_std([r[k] for r in runs]):>18s}' for k in keys)
        print(f'{label:32s}{row}  {len(runs)}')
        if sampler == 'ddpm':
            e2e = runs[0]['e2e_on_images']
            row = ''.join(f'{e2e[k]:18.2f}' for k in keys)
            print(f'{"  E2E on those images":32s}{row}')
    first = [
        r for r in results['runs']
        if (r['variant'], r['sampler']) == next(iter(groups))
    ]
    e2e = [r for r in results['runs'] if r['variant'] == 'e2e'][0]
    print(f'\n{"class":20s}{"E2E":>10s}{first[0]["variant"]:>16s}')
    for i, name in enumerate(results['classes']):
        mean = np.nanmean([r['IoU'][i] for r in first])
        print(f'{name:20s}{e2e["IoU"][i]:10.2f}{mean:16.2f}')


def run_groups(results) -> dict:
    """The runs of each (variant, sampler), in order of first appearance
    (dict keys), seeds in order."""
    groups = {}
    for run in results['runs']:
        groups.setdefault((run['variant'], run['sampler']), []).append(run)
    return groups


def print_uncertainty_tables(results):
    """Calibration and error detection of each (variant, sampler), mean
    over seeds: ECE (%), NLL, Brier; AUROC and AUPRC (%) of each
    uncertainty score for the prediction's wrong pixels."""
    print(f'\n{"calibration":32s}{"ECE %":>14s}{"NLL":>14s}{"Brier":>14s}'
          '  seeds')
    rows = [(key, runs) for key, runs in run_groups(results).items()
            if 'calibration' in runs[0]]
    for (variant, sampler), runs in rows:
        label = variant if sampler == '-' else f'{variant} {sampler}'
        cells = ''.join(
            f'{mean_std([r["calibration"][k] for r in runs], d):>14s}'
            for k, d in (('ECE', 2), ('NLL', 3), ('Brier', 3)))
        print(f'{label:32s}{cells}  {len(runs)}')
    print(f'\n{"error detection":32s}{"score":>14s}{"errors %":>12s}'
          f'{"AUROC %":>16s}{"AUPRC %":>16s}')
    for (variant, sampler), runs in rows:
        label = variant if sampler == '-' else f'{variant} {sampler}'
        det = runs[0]['error_detection']
        for score in (k for k in det if isinstance(det[k], dict)):
            auroc = mean_std(
                [r['error_detection'][score]['AUROC'] for r in runs])
            auprc = mean_std(
                [r['error_detection'][score]['AUPRC'] for r in runs])
            rate = mean_std([r['error_detection']['error_rate'] for r in runs])
            print(f'{label:32s}{score:>14s}{rate:>12s}{auroc:>16s}'
                  f'{auprc:>16s}')
            label = ''


def write_quality_figures(results, stem: str) -> list:
    """PNG figures beside the JSON (``stem`` + suffix): per-class IoU of
    the E2E learner, the refiner and the first variant; reliability
    diagrams where calibration was measured; mIoU against DDIM steps where
    the first variant has two or more ``ddim-K`` samplers.

    Returns:
        list[str]: The files written.
    """
    groups = run_groups(results)
    written = []
    mean_iou = (lambda runs: np.nanmean(
        np.array([r['IoU'] for r in runs], dtype=float), 0).tolist())
    series = {}
    if ('e2e', '-') in groups:
        series['E2E learner'] = mean_iou(groups[('e2e', '-')])
    for (variant, sampler), runs in groups.items():
        if variant not in ('e2e', 'e2e-longer') and not any(
                name.startswith(variant + ' ') for name in series):
            series[f'{variant} {sampler}'] = mean_iou(runs)
    if len(series) > 1:
        written.append(
            per_class_iou_figure(results['classes'], series,
                                 f'{stem}_per_class_iou.png',
                                 'per-class IoU (mean over seeds)'))
    panels = {
        (variant if sampler == '-' else f'{variant} {sampler}'):
        runs[0]['calibration']
        for (variant, sampler), runs in groups.items()
        if 'calibration' in runs[0]
    }
    if panels:
        written.append(
            reliability_figure(panels, f'{stem}_reliability.png',
                               'reliability (first seed)'))
    first = next((v for v, _ in groups if v not in ('e2e', 'e2e-longer')),
                 None)
    steps = sorted((int(m.group(1)), runs)
                   for (variant, sampler), runs in groups.items()
                   if variant == first
                   for m in [re.fullmatch(r'ddim-(\d+)', sampler)] if m)
    if len(steps) > 1:
        lines = {
            first:
            [statistics.mean(r['mIoU'] for r in runs) for _, runs in steps]
        }
        if ('e2e', '-') in groups:
            lines['E2E learner'] = [groups[('e2e', '-')][0]['mIoU']
                                    ] * len(steps)
        written.append(
            lines_figure([k for k, _ in steps], lines,
                         f'{stem}_miou_vs_steps.png', 'DDIM steps', 'mIoU (%)',
                         'mIoU against DDIM steps'))
    return written


if __name__ == '__main__':
    main()
