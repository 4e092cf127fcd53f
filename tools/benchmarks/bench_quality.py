# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""Does the ensemble beat its E2E learner? mIoU over seeds and samplers.

Trains the E2E learner once (seed 0), then each ResEnsemble variant for
each seed on top of it, and scores every sampler setting on the test split
together with the E2E learner alone. Runs whose final checkpoint exists in
``--work-dir`` are reused. Prints mean ± std over seeds and writes JSON.

Variants (the ResEnsemble config of the data set, changed as named):

* ``cached-sample``: E2E outputs from the cache, εθ predicts x̄0
  (``prediction_type='sample'``), the configs' default;
* ``onthefly-sample``: E2E outputs computed on the augmented batch;
* ``cached-epsilon``: the paper's ε-prediction;
* ``cached-v``: v-prediction;
* ``refiner-ce``: ablation, the same head trained deterministically with
  cross-entropy on top of x̂0 (:class:`E2ERefinerHead`, no diffusion);
* ``plain-ddpm``: ablation, a conditional DDPM that generates x0 itself
  from the image features alone (no residual, no x̂0 input, no ensemble:
  ``residual_target=False, condition_on_e2e=False``), SegDiff-style, with
  the same head and training budget.

Samplers: ``ddim-K`` (K DDIM steps), ``ddim-KxS`` (S samples averaged),
``ddpm`` (Algorithm 2 over all T steps).

``--cfg-options`` changes every ResEnsemble config (not the E2E learner's),
for example a smaller head; its runs get their own folders, named after
the options, so they are never mixed up with the default's.

Example (the generated data set, as in docs/benchmarks.md)::

    python tools/benchmarks/bench_quality.py --seeds 0 1 2 \\
        --variants cached-sample cached-epsilon onthefly-sample \\
        --ablation-seeds 0 --samplers ddim-1 ddim-4 ddim-10 ddim-4x4 \\
        --out work_dirs/bench_quality/shapes.json
    # a head of 32 channels
    python tools/benchmarks/bench_quality.py --seeds 0 1 2 \\
        --samplers ddim-1 ddim-4 ddim-4x4 \\
        --cfg-options model.decode_head.channels=32 \\
        --out work_dirs/bench_quality/shapes_channels32.json
"""
import argparse
import json
import os
import os.path as osp
import re
import statistics
import time

import numpy as np
from mmengine.config import DictAction
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

import mmseg_resensemble  # noqa: F401
from mmseg_resensemble.apis import (evaluate_learners, load_resensemble,
                                    load_run_config, train_or_reuse)
from mmseg_resensemble.datasets import generate_shapes_dataset

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
        '--data-root', help='default: generate the shapes data set')
    parser.add_argument('--work-dir', default='work_dirs/bench_quality')
    parser.add_argument(
        '--variants',
        nargs='+',
        default=['cached-sample'],
        choices=sorted(VARIANTS))
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
        '--samplers', nargs='+', default=['ddim-1', 'ddim-4', 'ddim-4x4'])
    parser.add_argument('--e2e-iters', type=int)
    parser.add_argument('--res-iters', type=int)
    parser.add_argument('--out', help='JSON results')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        default={},
        help='key=value changes of the ResEnsemble configs, as in '
        'tools/train.py')
    parser.add_argument(
        '--quick',
        action='store_true',
        help='smoke run: tiny data, 4 training iterations, seed 0, ddim-1')
    args = parser.parse_args()
    if args.quick:
        args.e2e_iters = args.res_iters = 4
        args.seeds, args.ablation_seeds = [0], [0]
        args.samplers = ['ddim-1']
    return args


def sampler_cfg(name: str) -> dict:
    if name == 'ddpm':
        return dict(sampler='ddpm', num_steps=None, num_samples=1)
    match = re.fullmatch(r'ddim-(\d+)(?:x(\d+))?', name)
    if match is None:
        raise ValueError(f'sampler {name!r} is not ddpm, ddim-K or ddim-KxS')
    return dict(
        sampler='ddim',
        num_steps=int(match.group(1)),
        num_samples=int(match.group(2) or 1))


def run_suffix(cfg_options: dict) -> str:
    """The folder-name suffix of runs with ``--cfg-options``."""
    return ''.join(f'_{key}={value}'.replace('/', '-').replace(' ', '')
                   for key, value in sorted(cfg_options.items()))


def mean_std(values):
    if len(values) == 1:
        return f'{values[0]:.2f}'
    return f'{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}'


def main():
    args = parse_args()
    init_default_scope('mmseg')
    for name in args.samplers:
        sampler_cfg(name)  # fail early on a typo
    paths = CONFIGS[args.dataset]
    work_dir = osp.abspath(args.work_dir)
    splits = dict(train=8, val=4) if args.quick else dict(train=200, val=50)
    data_root = args.data_root or generate_shapes_dataset(
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
            cfg.model.decode_head.prediction_type = prediction_type
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


if __name__ == '__main__':
    main()
