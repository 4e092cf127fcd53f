# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""Inference latency: the E2E learner alone vs ResEnsemble.

Builds the model of a ResEnsemble config (random weights: latency does not
depend on them), then times, per image, the E2E learner's own inference
(backbone, decoder, upsampling: what running it alone costs) and
ResEnsemble's (the same plus the diffusion learner's sampling loop) for
each sampler setting, and prints the ratio to the E2E learner. ``--sizes``
and ``--classes`` add how the cost grows with image size and with the
number of classes (DDIM at ``--steps``' first value).

Example::

    python tools/benchmarks/bench_latency.py CONFIG --shape 360 480 \\
        --steps 1 2 4 10 25 --ddpm --out latency.json
"""
import argparse
import copy
import json
import os
import platform
import statistics
import time

import torch
from mmengine.config import Config, DictAction
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

import mmseg_resensemble  # noqa: F401
from mmseg_resensemble.models.segmentors.e2e_learner import load_e2e_config


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='a ResEnsemble config')
    parser.add_argument('--shape', type=int, nargs=2, default=(360, 480))
    parser.add_argument('--steps', type=int, nargs='+', default=[1, 2, 4])
    parser.add_argument(
        '--ddpm', action='store_true', help='also DDPM over all T steps')
    parser.add_argument('--num-samples', type=int, default=1)
    parser.add_argument(
        '--sizes',
        type=int,
        nargs='*',
        default=[],
        help='also time these square image sizes')
    parser.add_argument(
        '--classes',
        type=int,
        nargs='*',
        default=[],
        help='also time these numbers of classes')
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument(
        '--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--threads', type=int, help='torch CPU threads')
    parser.add_argument('--out', help='write the results as JSON here')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, e.g. model.decode_head.channels=32')
    parser.add_argument(
        '--quick',
        action='store_true',
        help='smoke run: 64x64, one step setting, one repeat')
    args = parser.parse_args()
    if args.quick:
        args.shape, args.steps, args.ddpm = (64, 64), [1], False
        args.repeats, args.warmup = 1, 0
    return args


def build(cfg: Config, num_classes: int = None) -> torch.nn.Module:
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.e2e_checkpoint = None
    if num_classes is not None:
        e2e = load_e2e_config(model_cfg.e2e)
        heads = e2e.decode_head if isinstance(e2e.decode_head,
                                              list) else [e2e.decode_head]
        aux = e2e.get('auxiliary_head') or []
        for head in heads + (aux if isinstance(aux, list) else [aux]):
            head.num_classes = num_classes
        model_cfg.e2e = e2e
        model_cfg.decode_head.num_classes = num_classes
    return MODELS.build(model_cfg)


def time_fn(fn, device: str, repeats: int, warmup: int) -> float:
    """Median seconds of ``fn()``."""
    times = []
    for i in range(warmup + repeats):
        if device.startswith('cuda'):
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.startswith('cuda'):
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(model, shape, settings, args):
    """Latency of the E2E learner and of each ResEnsemble setting."""
    model = model.to(args.device).eval()
    inputs = torch.randn(1, 3, *shape, device=args.device)
    metas = [
        dict(
            img_shape=tuple(shape),
            ori_shape=tuple(shape),
            pad_shape=tuple(shape),
            padding_size=[0, 0, 0, 0])
    ]
    rows = []
    with torch.no_grad():
        e2e = time_fn(lambda: model.e2e.inference(inputs, metas), args.device,
                      args.repeats, args.warmup)
        rows.append(dict(setting='E2E alone', seconds=e2e, ratio=1.0))
        base = copy.deepcopy(model.test_cfg)
        for name, test_cfg in settings:
            model.test_cfg = dict(base, **test_cfg)
            seconds = time_fn(lambda: model.inference(inputs, metas),
                              args.device, args.repeats, args.warmup)
            rows.append(
                dict(setting=name, seconds=seconds, ratio=seconds / e2e))
        model.test_cfg = base
    return rows


def print_rows(title, rows):
    print(f'\n{title}')
    print(f'{"setting":28s}{"ms / image":>12s}{"x E2E":>9s}')
    for row in rows:
        print(f'{row["setting"]:28s}{1000 * row["seconds"]:12.1f}'
              f'{row["ratio"]:9.2f}')


def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    init_default_scope('mmseg')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    common = dict(num_samples=args.num_samples, mode='whole')
    settings = [(f'ResEns DDIM-{k}', dict(common, sampler='ddim', num_steps=k))
                for k in args.steps]
    if args.ddpm:
        settings.append(
            ('ResEns DDPM-T', dict(common, sampler='ddpm', num_steps=None)))
    results = dict(
        config=args.config,
        cfg_options=args.cfg_options,
        device=(torch.cuda.get_device_name() if args.device.startswith('cuda')
                else f'{platform.processor() or "cpu"}, '
                f'{torch.get_num_threads()} threads'),
        torch=torch.__version__,
        date=time.strftime('%Y-%m-%d %H:%M %Z'),
        num_samples=args.num_samples)
    model = build(cfg)
    rows = measure(model, args.shape, settings, args)
    results['steps'] = rows
    print_rows(
        f'{args.config}, {args.shape[0]}x{args.shape[1]}, '
        f'{results["device"]}', rows)
    first = settings[:1]
    for size in args.sizes:
        rows = measure(model, (size, size), first, args)
        results.setdefault('sizes', []).append(dict(size=size, rows=rows))
        print_rows(f'{size}x{size}', rows)
    for k in args.classes:
        rows = measure(build(cfg, k), args.shape, first, args)
        results.setdefault('classes', []).append(dict(classes=k, rows=rows))
        print_rows(f'{k} classes', rows)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            json.dump(results, f, indent=2)


if __name__ == '__main__':
    main()
