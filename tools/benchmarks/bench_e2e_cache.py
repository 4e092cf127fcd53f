# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""Time per training iteration with and without the E2E cache.

The same ResEnsemble config is trained twice for ``--warmup + --iters``
iterations on the generated shapes data set (CPU is fine): once computing
x̂0 = E2E(I0) on the fly, once reading it from the cache that
``E2ECacheHook`` builds first. The E2E learner is DeepLabV3+
(``DepthwiseSeparableASPPHead``) on a MobileNetV2, so its decoder costs
what real decoders cost relative to the backbone. Weights are random
(timing does not depend on them).

Then each mode trains again, alone in a fresh process, to measure its
peak memory over ``--iters`` iterations: the peak resident set size of the
process (Linux ``VmHWM``, reset after the set-up) on the CPU, the peak of
``torch.cuda.max_memory_allocated`` on a GPU.

``--sizes`` instead prints the bytes per cache entry for CamVid,
Cityscapes and ADE20K (uncompressed, which is exact and an upper bound of
the compressed size).

Example::

    python tools/benchmarks/bench_e2e_cache.py --iters 30 --warmup 5
    python tools/benchmarks/bench_e2e_cache.py --sizes
"""
import argparse
import json
import logging
import os
import os.path as osp
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np
import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmseg.registry import MODELS

import mmseg_resensemble  # noqa: F401
from mmseg_resensemble.datasets import generate_shapes_dataset
from mmseg_resensemble.e2e_cache import E2ECacheStore, build_e2e_cache

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
NUM_CLASSES = 5
DATA_PREPROCESSOR = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size_divisor=8)


def e2e_model() -> dict:
    """The E2E learner: the shipped DeepLabV3+ on MobileNetV2 (output
    stride 8, configs/_base_/models/deeplabv3plus_m-v2-d8.py) with random
    weights (the benchmark measures time and memory), a 256-channel
    decoder and no auxiliary head."""
    model = Config.fromfile(
        osp.join(REPO, 'configs', '_base_', 'models',
                 'deeplabv3plus_m-v2-d8.py')).model
    model.backbone.pop('init_cfg')
    model.decode_head.update(channels=256, num_classes=NUM_CLASSES)
    model.auxiliary_head = None
    model.data_preprocessor = DATA_PREPROCESSOR
    model.test_cfg = dict(mode='whole')
    return model.to_dict()


# the shipped head (configs/_base_/models/resensemble_residual-diffusion.py)
# on the E2E learner's stride-4 and last levels
HEAD = dict(
    Config.fromfile(
        osp.join(REPO, 'configs', '_base_', 'models',
                 'resensemble_residual-diffusion.py')).model.decode_head,
    in_channels=[24, 320],
    in_index=(0, 3),
    num_classes=NUM_CLASSES)

# (name, image (H, W), classes, images) of the projections
DATASETS = [
    ('CamVid', None, 11, 367),
    ('Cityscapes', (1024, 2048), 19, 2975),
    ('ADE20K', (512, 512), 150, 20210),
]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--iters', type=int, default=30)
    parser.add_argument('--warmup', type=int, default=5)
    parser.add_argument('--batch-size', type=int, default=4)
    parser.add_argument('--images', type=int, default=32)
    parser.add_argument(
        '--size', type=int, nargs=2, default=(96, 128), metavar=('H', 'W'))
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--num-workers', type=int, default=0)
    parser.add_argument(
        '--work-dir', help='default: a temporary folder, removed after')
    parser.add_argument(
        '--sizes',
        action='store_true',
        help='print the bytes per entry for CamVid, Cityscapes, ADE20K')
    # internal: the child process that measures one mode's peak memory
    parser.add_argument(
        '--peak-memory-of',
        choices=('on_the_fly', 'cached'),
        help=argparse.SUPPRESS)
    return parser.parse_args()


def run_paths(work_dir):
    """The generated data set and the E2E weights of a benchmark run."""
    return osp.join(work_dir, 'data'), osp.join(work_dir, 'e2e.pth')


def train_cfg(work_dir, args, cached):
    h, w = args.size
    data_root, ckpt = run_paths(work_dir)
    cache_dir = osp.join(work_dir, 'e2e_cache')
    pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations'),
        dict(type='LoadE2ECache', cache_dir=cache_dir),
        dict(
            type='RandomResize',
            scale=(w, h),
            ratio_range=(0.75, 1.5),
            keep_ratio=True),
        dict(type='RandomCrop', crop_size=(h, w), cat_max_ratio=0.9),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PhotoMetricDistortion'),
        dict(type='PackResEnsembleInputs')
    ]
    if not cached:
        pipeline = [t for t in pipeline if t['type'] != 'LoadE2ECache']
    test_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=(w, h), keep_ratio=True),
        dict(type='LoadAnnotations'),
        dict(type='PackSegInputs')
    ]

    def loader(pipe, train):
        return dict(
            batch_size=args.batch_size if train else 1,
            num_workers=args.num_workers,
            persistent_workers=args.num_workers > 0,
            sampler=dict(type='InfiniteSampler', shuffle=True)
            if train else dict(type='DefaultSampler', shuffle=False),
            dataset=dict(
                type='SyntheticShapesDataset',
                data_root=data_root,
                data_prefix=dict(
                    img_path='img_dir/train', seg_map_path='ann_dir/train'),
                pipeline=pipe))

    return Config(
        dict(
            default_scope='mmseg',
            work_dir=osp.join(work_dir, 'cached' if cached else 'on_the_fly'),
            model=dict(
                type='ResEnsembleSegmentor',
                e2e=e2e_model(),
                e2e_checkpoint=ckpt,
                decode_head=HEAD),
            train_dataloader=loader(pipeline, True),
            train_cfg=dict(
                type='IterBasedTrainLoop',
                max_iters=args.warmup + args.iters,
                val_interval=10**9),
            optim_wrapper=dict(
                type='OptimWrapper',
                constructor='TrainableParamsOptimWrapperConstructor',
                optimizer=dict(type='AdamW', lr=1e-3)),
            test_dataloader=loader(test_pipeline, False),
            test_cfg=dict(type='TestLoop'),
            test_evaluator=dict(type='IoUMetric'),
            custom_hooks=[dict(type='E2ECacheHook', cache_dir=cache_dir)]
            if cached else [],
            default_hooks=dict(
                logger=dict(type='LoggerHook', interval=10**9),
                checkpoint=None),
            log_level='WARNING',
            randomness=dict(seed=0)))


def summarise(times):
    return (f'{1000 * statistics.median(times):7.1f} ms median, '
            f'{1000 * statistics.mean(times):7.1f} ms mean, '
            f'{1000 * statistics.stdev(times):6.1f} ms std')


def bench_speed(args, work_dir):
    """Interleave on-the-fly and cached iterations of one model, so that
    the load of a shared machine hits both alike."""
    h, w = args.size
    data_root, ckpt = run_paths(work_dir)
    generate_shapes_dataset(
        data_root, splits=dict(train=args.images), size=(h, w))
    torch.manual_seed(0)
    e2e = MODELS.build(e2e_model())
    e2e.init_weights()
    torch.save(dict(state_dict=e2e.state_dict()), ckpt)
    # the cache, then one iteration through the Runner
    start = time.perf_counter()
    runner = first_iteration(work_dir, args, cached=True)
    build_time = time.perf_counter() - start
    model, optim_wrapper = runner.model, runner.optim_wrapper
    iterators = {
        cached: train_iterator(runner, train_cfg(work_dir, args, cached))
        for cached in (False, True)
    }
    iter_times = {False: [], True: []}
    step_times = {False: [], True: []}
    for i in range(args.warmup + args.iters):
        for cached in ((False, True) if i % 2 else (True, False)):
            t0 = time.perf_counter()
            data = next(iterators[cached])
            t1 = time.perf_counter()
            model.train_step(data, optim_wrapper)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            t2 = time.perf_counter()
            if i >= args.warmup:
                iter_times[cached].append(t2 - t0)
                step_times[cached].append(t2 - t1)
    store = E2ECacheStore(osp.join(work_dir, 'e2e_cache'))
    entries = store.entry_keys_on_disk()
    entry_bytes = store.disk_bytes() / len(entries)
    with np.load(next(iter(entries.values()))) as npz:
        map_h, map_w = json.loads(str(npz['header']))['shape']
    print(f'\nmachine: {platform.machine()}, {os.cpu_count()} CPU cores, '
          f'torch threads {torch.get_num_threads()}, CUDA '
          f'{"yes" if torch.cuda.is_available() else "no"}; torch '
          f'{torch.__version__}')
    print(f'data: {args.images} generated images {h}x{w}, batch '
          f'{args.batch_size}, {args.num_workers} data workers; '
          f'{args.warmup} warm-up + {args.iters} timed iterations per '
          'mode, interleaved')
    print(f'cache: built in {build_time:.1f} s (with one training '
          f'iteration), {len(entries)} entries, '
          f'{entry_bytes / 1024:.1f} KiB per image (compressed .npz, '
          f'{NUM_CLASSES} classes, {map_h}x{map_w} maps; random E2E '
          'weights, so not the entropy of a trained model)')
    for cached, name in ((False, 'on the fly'), (True, 'cached')):
        print(f'{name:>10}: iteration {summarise(iter_times[cached])}')
        print(f'{"":>10}  model step {summarise(step_times[cached])}')
    ratio = statistics.median(iter_times[False]) / statistics.median(
        iter_times[True])
    print(f'speed-up per iteration (medians): {ratio:.2f}x')
    peaks = {
        mode: peak_memory_in_child(args, work_dir, mode)
        for mode in ('on_the_fly', 'cached')
    }
    unit = peaks['cached']['measure']
    print(f'peak memory over {args.iters} training iterations, each mode '
          f'alone in a fresh process ({unit}):')
    for mode, name in (('on_the_fly', 'on the fly'), ('cached', 'cached')):
        peak, before = peaks[mode]['peak_bytes'], peaks[mode]['before_bytes']
        print(f'{name:>10}: {human(peak)} peak, {human(peak - before)} '
              'above the value before the first iteration')


def first_iteration(work_dir, args, cached):
    """A Runner that trained one iteration (with the cache:
    ``build_e2e_cache`` builds it first, or reuses a complete one)."""
    cfg = train_cfg(work_dir, args, cached=cached)
    cfg.train_cfg.max_iters = 1
    runner = Runner.from_cfg(cfg)
    build_e2e_cache(runner)
    runner.train()
    runner.model.train()
    return runner


def train_iterator(runner, cfg):
    """Batches of ``cfg``'s training data loader, endlessly."""
    return iter(runner.build_dataloader(cfg.train_dataloader))


def reset_peak_memory():
    """Start a new peak; returns what the peak measures."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        return 'torch.cuda.max_memory_allocated'
    # writing 5 resets the process's peak resident set size (Linux)
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')
    return 'peak resident set size of the process, VmHWM'


def memory_bytes(peak):
    """The peak since the reset, or the current value, of what
    :func:`reset_peak_memory` measures."""
    if torch.cuda.is_available():
        return (torch.cuda.max_memory_allocated()
                if peak else torch.cuda.memory_allocated())
    key = 'VmHWM:' if peak else 'VmRSS:'
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f'no {key} in /proc/self/status')


def measure_peak_memory(args, work_dir):
    """The child process: train one mode, print its peak memory as JSON.

    The peak is reset once the model, optimiser and data loader exist, so
    it covers the training iterations only (activations, gradients,
    optimiser state, data); the cache was built by the parent.
    """
    cfg = train_cfg(work_dir, args, args.peak_memory_of == 'cached')
    runner = Runner.from_cfg(cfg)
    optim_wrapper = runner.build_optim_wrapper(runner.optim_wrapper)
    model = runner.model
    model.train()
    iterator = train_iterator(runner, cfg)
    measure = reset_peak_memory()
    before = memory_bytes(peak=False)
    for _ in range(args.iters):
        model.train_step(next(iterator), optim_wrapper)
    print('PEAK ' + json.dumps(
        dict(
            mode=args.peak_memory_of,
            measure=measure,
            before_bytes=before,
            peak_bytes=memory_bytes(peak=True))))


def peak_memory_in_child(args, work_dir, mode):
    command = [
        sys.executable,
        osp.abspath(__file__), '--peak-memory-of', mode, '--work-dir',
        work_dir, '--iters',
        str(args.iters), '--batch-size',
        str(args.batch_size), '--images',
        str(args.images), '--size',
        str(args.size[0]),
        str(args.size[1]), '--threads',
        str(args.threads), '--num-workers',
        str(args.num_workers)
    ]
    out = subprocess.run(
        command, check=True, stdout=subprocess.PIPE, text=True).stdout
    lines = [line for line in out.splitlines() if line.startswith('PEAK ')]
    return json.loads(lines[-1][len('PEAK '):])


def human(nbytes):
    for unit, scale in (('GiB', 2**30), ('MiB', 2**20)):
        if nbytes >= scale:
            return f'{nbytes / scale:.2f} {unit}'
    return f'{nbytes / 2**10:.1f} KiB'


def camvid_shape():
    """CamVid's image size, read from ``../shared/data/camvid`` when the
    data set is there."""
    folder = osp.join(REPO, '..', 'shared', 'data', 'camvid', 'img_dir',
                      'train')
    if osp.isdir(folder):
        shapes = {
            cv2.imread(osp.join(folder, n)).shape[:2]
            for n in sorted(os.listdir(folder))[:20]
        }
        if len(shapes) == 1:
            return shapes.pop(), f'read from {osp.abspath(folder)}'
        return max(shapes), f'largest of {sorted(shapes)}'
    return (360, 480), 'SegNet CamVid size (data set not found)'


def bench_sizes(work_dir):
    camvid, source = camvid_shape()
    print(f'CamVid image size {camvid[0]}x{camvid[1]} ({source})')
    print('bytes per entry (uncompressed .npz: an exact upper bound):')
    print(f'{"data set":<11}{"image":>11}{"K":>5}{"stride":>7}'
          f'{"map":>9}{"topk":>6}{"bytes/image":>13}{"images":>8}'
          f'{"total":>11}')
    g = torch.Generator().manual_seed(0)
    for name, size, k, count in DATASETS:
        size = camvid if size is None else size
        for stride in (8, 4):
            h, w = (-(-s // stride) for s in size)
            for topk in (None, 5) if k > 11 else (None, ):
                store = E2ECacheStore(
                    tempfile.mkdtemp(dir=work_dir, prefix='sizes-'))
                meta = store.write_meta(
                    digest='0' * 64,
                    fingerprint={},
                    num_classes=k,
                    topk=topk,
                    key_root=work_dir)
                probs = torch.randn(k, h, w, generator=g).softmax(0)
                path = store.write_entry(
                    'img.png', probs, meta=meta, compress=False)
                nbytes = osp.getsize(path)
                total = nbytes * count
                print(f'{name:<11}{f"{size[0]}x{size[1]}":>11}{k:>5}'
                      f'{stride:>7}{f"{h}x{w}":>9}{str(topk or "-"):>6}'
                      f'{nbytes:>13,}{count:>8}{human(total):>11}')


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    init_default_scope('mmseg')
    MMLogger.get_current_instance().setLevel(logging.WARNING)
    work_dir = args.work_dir or tempfile.mkdtemp(prefix='bench_e2e_cache_')
    os.makedirs(work_dir, exist_ok=True)
    try:
        if args.peak_memory_of:
            measure_peak_memory(args, work_dir)
            return
        if args.sizes:
            bench_sizes(work_dir)
        else:
            bench_speed(args, work_dir)
    finally:
        if args.work_dir is None:
            import shutil
            shutil.rmtree(work_dir, ignore_errors=True)
    print(f'python {sys.version.split()[0]}, numpy {np.__version__}')


if __name__ == '__main__':
    main()
