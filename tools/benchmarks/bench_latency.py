# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""Inference cost: the E2E learner alone vs ResEnsemble.

Builds the model of a ResEnsemble config (random weights: cost does not
depend on them), then times, per image, the E2E learner's own inference
(backbone, decoder, upsampling: what running it alone costs) and
ResEnsemble's (the same plus the diffusion learner's sampling loop) for
each sampler setting, and prints the ratio to the E2E learner. On a GPU
the times come from CUDA events after a synchronise, and each setting's
peak memory (``torch.cuda.max_memory_allocated``) is reported.
``--sizes`` and ``--classes`` add how the cost grows with image size and
with the number of classes (DDIM at ``--steps``' first value).

``--flops`` counts multiply-adds (one per multiply-add, mmengine's
``FlopAnalyzer``) and parameters of the E2E learner, of the head's
condition (once per image) and of one sampling step, so that heads can be
compared without a GPU. ``--profile`` prints the torch profiler's top
operators of one prediction at ``--steps``' first value. ``--repeats 0``
skips the timing.

The precision of the head follows ``test_cfg.autocast`` (``--autocast``
overrides it); cuDNN's autotuner follows the config's
``env_cfg.cudnn_benchmark``, as ``tools/test.py`` does.

Example::

    python tools/benchmarks/bench_latency.py CONFIG --shape 360 480 \\
        --steps 1 2 4 10 25 --ddpm --flops --out latency.json
"""
import argparse
import copy
import json
import os
import platform
import statistics
import time

import torch
import torch.nn as nn
from mmengine.config import Config, DictAction
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

import mmseg_resensemble  # noqa: F401
from mmseg_resensemble.benchmarking.figures import lines_figure
from mmseg_resensemble.models.decode_heads import TEST_CFG_DEFAULTS
from mmseg_resensemble.models.utils.e2e_learner import load_e2e_config


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='a ResEnsemble config')
    parser.add_argument('--shape', type=int, nargs=2, default=(360, 480))
    parser.add_argument(
        '--steps',
        type=int,
        nargs='+',
        help='DDIM steps (default: 1 2 4; 1 with --quick)')
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
    parser.add_argument('--repeats', type=int, default=10, help='0: no timing')
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument(
        '--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--threads', type=int, help='torch CPU threads')
    parser.add_argument(
        '--flops',
        action='store_true',
        help='count the multiply-adds and parameters of the E2E learner, '
        'the condition and one sampling step')
    parser.add_argument(
        '--profile',
        action='store_true',
        help='print the profiler\'s top operators of one prediction')
    parser.add_argument(
        '--autocast',
        choices=('auto', 'fp32', 'bf16', 'fp16'),
        help='test_cfg.autocast, the head\'s precision (default: the '
        'config\'s)')
    parser.add_argument(
        '--channels-last',
        action='store_true',
        help='the model and the input in channels-last memory format')
    parser.add_argument(
        '--compile',
        choices=('default', 'reduce-overhead', 'max-autotune'),
        help='torch.compile the denoiser\'s forward with this mode '
        '(reduce-overhead: CUDA graphs)')
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
        args.shape, args.ddpm = (64, 64), False
        args.steps = args.steps or [1]
        args.repeats, args.warmup = 1, 0
    args.steps = args.steps or [1, 2, 4]
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
    """Median seconds of ``fn()``: CUDA events on a GPU (after a
    synchronise), the host clock on the CPU. On a GPU the peak memory is
    reset after the warm-ups, so that cuDNN's autotuning workspace (the
    first calls of a shape) is not counted."""
    for _ in range(warmup):
        fn()
    cuda = device.startswith('cuda')
    times = []
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    for _ in range(repeats):
        if cuda:
            start, end = (
                torch.cuda.Event(enable_timing=True) for _ in range(2))
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        else:
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def example_inputs(model, shape, device, channels_last=False):
    """One random image of ``shape`` and its metainfo."""
    inputs = torch.randn(1, 3, *shape, device=device)
    if channels_last:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    metas = model.default_img_metas(inputs)
    return inputs, metas


def measure(model, shape, settings, args):
    """Latency (and peak memory on a GPU) of the E2E learner and of each
    ResEnsemble setting."""
    inputs, metas = example_inputs(model, shape, args.device,
                                   args.channels_last)
    cuda = args.device.startswith('cuda')
    rows = []

    def timed(name, fn, e2e=None):
        seconds = time_fn(fn, args.device, args.repeats, args.warmup)
        row = dict(
            setting=name,
            seconds=seconds,
            ratio=1.0 if e2e is None else seconds / e2e)
        if cuda:
            row['peak_mib'] = torch.cuda.max_memory_allocated() / 2**20
        rows.append(row)
        return seconds

    with torch.no_grad():
        e2e = timed('E2E alone', lambda: model.e2e.inference(inputs, metas))
        base = copy.deepcopy(model.test_cfg)
        for name, test_cfg in settings:
            model.test_cfg = dict(base, **test_cfg)
            timed(name, lambda: model.inference(inputs, metas), e2e)
        model.test_cfg = base
    return rows


class Call(nn.Module):
    """A function as a module, for :class:`FlopAnalyzer` to trace."""

    def __init__(self, fn, owner: nn.Module) -> None:
        super().__init__()
        self.fn = fn
        self.owner = owner

    def forward(self, *args):
        return self.fn(*args)


def count_flops(model, shape, device='cpu'):
    """Multiply-adds and parameters of the E2E learner, the condition
    (once per image) and one sampling step, for one image of ``shape``.

    Returns:
        dict: ``{part: dict(macs=..., params=...)}`` for ``e2e``,
        ``condition`` and ``step``, and ``ddim1`` (one DDIM step's whole
        prediction, traced in one piece).
    """
    from mmengine.analysis import FlopAnalyzer, parameter_count

    def macs(fn, owner, *inputs):
        analyzer = FlopAnalyzer(Call(fn, owner), inputs)
        analyzer.unsupported_ops_warnings(False)
        analyzer.uncalled_modules_warnings(False)
        return int(analyzer.total())

    head = model.decode_head
    model = model.to(device).eval()
    inputs, metas = example_inputs(model, shape, device)
    test_cfg = copy.deepcopy(model.test_cfg)
    with torch.no_grad():
        feats = model.extract_feat(inputs)
        probs = model.e2e_probs(inputs, metas, feats)
        cond = head.encode_condition(feats, shape)
        x_hat = head.encode_e2e(probs, cond.shape[-2:])
        x_t = torch.randn_like(x_hat)
        t = torch.full((1, ), head.diffusion.num_timesteps - 1, device=device)
        # one deterministic DDIM step in fp32, the generator left out
        model.test_cfg = dict(
            test_cfg,
            sampler='ddim',
            num_steps=1,
            num_samples=1,
            seed=None,
            autocast='fp32')
        try:
            parts = dict(
                e2e=macs(lambda x: model.e2e.inference(x, metas), model.e2e,
                         inputs),
                condition=macs(lambda *f: head.encode_condition(f, shape),
                               head, *feats),
                step=macs(head.forward, head, cond, x_hat, x_t, t),
                ddim1=macs(lambda x: model.inference(x, metas)['probs'], model,
                           inputs))
        finally:
            model.test_cfg = test_cfg
    params = dict(
        e2e=parameter_count(model.e2e)[''],
        condition=parameter_count(head.denoiser.cond_proj)[''] if hasattr(
            head.denoiser, 'cond_proj') else 0,
        step=parameter_count(head)[''])
    params['ddim1'] = params['e2e'] + params['step']
    return {k: dict(macs=v, params=params[k]) for k, v in parts.items()}


def print_flops(flops, steps):
    e2e = flops['e2e']['macs']
    print(f'\n{"part":34s}{"GMAC":>10s}{"% of E2E":>10s}{"params M":>10s}')
    names = dict(
        e2e='E2E learner',
        condition='condition (once per image)',
        step='one sampling step',
        ddim1='whole DDIM-1 prediction')
    for key, name in names.items():
        part = flops[key]
        print(f'{name:34s}{part["macs"] / 1e9:10.2f}'
              f'{100 * part["macs"] / e2e:10.1f}'
              f'{part["params"] / 1e6:10.2f}')
    head = flops['condition']['macs'] + flops['step']['macs']
    print(f'condition + one step: {100 * head / e2e:.1f} % of the E2E '
          'learner')
    for k in steps:
        total = (flops['condition']['macs'] + k * flops['step']['macs'])
        print(f'condition + {k} step{"s" if k > 1 else ""}: '
              f'{100 * total / e2e:.1f} %')


def profile(model, shape, steps, args, row_limit=15):
    """The profiler's top operators of one prediction with ``steps`` DDIM
    steps, as a table (by device time on a GPU, by CPU time on a CPU)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile
    inputs, metas = example_inputs(model, shape, args.device,
                                   args.channels_last)
    cuda = args.device.startswith('cuda')
    activities = [ProfilerActivity.CPU
                  ] + ([ProfilerActivity.CUDA] if cuda else [])
    base = copy.deepcopy(model.test_cfg)
    model.test_cfg = dict(base, sampler='ddim', num_steps=steps)
    try:
        with torch.no_grad():
            for _ in range(max(1, args.warmup)):
                model.inference(inputs, metas)
            if cuda:
                torch.cuda.synchronize()
            with torch_profile(activities=activities) as prof:
                model.inference(inputs, metas)
                if cuda:
                    torch.cuda.synchronize()
    finally:
        model.test_cfg = base
    key = 'self_cuda_time_total' if cuda else 'self_cpu_time_total'
    return prof.key_averages().table(sort_by=key, row_limit=row_limit)


def print_rows(title, rows):
    print(f'\n{title}')
    memory = any('peak_mib' in row for row in rows)
    print(f'{"setting":28s}{"ms / image":>12s}{"x E2E":>9s}' +
          (f'{"peak MiB":>10s}' if memory else ''))
    for row in rows:
        print(f'{row["setting"]:28s}{1000 * row["seconds"]:12.2f}'
              f'{row["ratio"]:9.2f}' +
              (f'{row["peak_mib"]:10.1f}' if memory else ''))


def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    init_default_scope('mmseg')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if args.autocast:
        cfg.model.test_cfg.autocast = args.autocast
    torch.backends.cudnn.benchmark = bool(
        cfg.get('env_cfg', {}).get('cudnn_benchmark', False))
    common = dict(num_samples=args.num_samples, mode='whole')
    settings = [(f'ResEns DDIM-{k}', dict(common, sampler='ddim', num_steps=k))
                for k in args.steps]
    if args.ddpm:
        settings.append(
            ('ResEns DDPM-T', dict(common, sampler='ddpm', num_steps=None)))
    results = dict(
        config=args.config,
        cfg_options=args.cfg_options,
        shape=list(args.shape),
        device=(torch.cuda.get_device_name() if args.device.startswith('cuda')
                else f'{platform.processor() or "cpu"}, '
                f'{torch.get_num_threads()} threads'),
        torch=torch.__version__,
        date=time.strftime('%Y-%m-%d %H:%M %Z'),
        num_samples=args.num_samples,
        autocast=cfg.model.test_cfg.get('autocast',
                                        TEST_CFG_DEFAULTS['autocast']),
        channels_last=args.channels_last,
        compile=args.compile,
        cudnn_benchmark=torch.backends.cudnn.benchmark)
    model = build(cfg)
    if args.flops:
        results['flops'] = count_flops(model, args.shape)
        print_flops(results['flops'], args.steps)
    model = model.to(args.device).eval()
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if args.compile:
        denoiser = model.decode_head.denoiser
        denoiser.forward = torch.compile(denoiser.forward, mode=args.compile)
    if args.repeats > 0:
        rows = measure(model, args.shape, settings, args)
        results['steps'] = rows
        print_rows(
            f'{args.config}, {args.shape[0]}x{args.shape[1]}, '
            f'{results["device"]}, head autocast {results["autocast"]}', rows)
        first = settings[:1]
        for size in args.sizes:
            rows = measure(model, (size, size), first, args)
            results.setdefault('sizes', []).append(dict(size=size, rows=rows))
            print_rows(f'{size}x{size}', rows)
        for k in args.classes:
            other = build(cfg, k).to(args.device).eval()
            rows = measure(other, args.shape, first, args)
            results.setdefault('classes',
                               []).append(dict(classes=k, rows=rows))
            print_rows(f'{k} classes', rows)
    if args.profile:
        table = profile(model, args.shape, args.steps[0], args)
        results['profile'] = table
        print(f'\nprofile of one DDIM-{args.steps[0]} prediction')
        print(table)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            json.dump(results, f, indent=2)
        if 'steps' in results and len(args.steps) > 1:
            print('figure: ' + latency_figure(results, args.steps,
                                              os.path.splitext(args.out)[0]))


def latency_figure(results: dict, steps, stem: str) -> str:
    """Milliseconds per image against DDIM steps, the E2E learner alone as
    a flat line: ``stem``_latency_vs_steps.png."""
    rows = {row['setting']: row for row in results['steps']}
    ms = [1000 * rows[f'ResEns DDIM-{k}']['seconds'] for k in steps]
    e2e = 1000 * rows['E2E alone']['seconds']
    return lines_figure(
        list(steps), {
            'ResEnsemble': ms,
            'E2E learner alone': [e2e] * len(steps)
        },
        f'{stem}_latency_vs_steps.png',
        'DDIM steps',
        'ms / image',
        f'{results["shape"][0]}x{results["shape"][1]}, {results["device"]}',
        log_x=True)


if __name__ == '__main__':
    main()
