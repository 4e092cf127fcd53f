# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""The benchmark scripts' --quick smoke runs: they run and write tables."""
import json
import re
import sys

from mmengine.config import Config

from tests.test_tools.test_train_test_tools import run

SHAPES = ('configs/resensemble/'
          'resensemble_fcn-m-v2-d8_1xb8-2k_shapes-96x128.py')


def run_script(args):
    """A benchmark script, one thread (the tests share the CPU)."""
    return run([sys.executable] + args, env=dict(OMP_NUM_THREADS='1'))


def test_bench_quality_quick(tmp_path):
    out = run_script([
        'tools/benchmarks/bench_quality.py', '--quick', '--work-dir',
        str(tmp_path), '--variants', 'cached-sample', 'onthefly-sample',
        '--out',
        str(tmp_path / 'quality.json'), '--cfg-options',
        'model.decode_head.channels=16'
    ])
    assert 'E2E learner alone' in out and 'cached-sample ddim-1' in out
    results = json.load(open(tmp_path / 'quality.json'))
    assert {r['variant']
            for r in results['runs']} == {'cached-sample', 'onthefly-sample'}
    assert all(0 <= r['mIoU'] <= 100 for r in results['runs'])
    # the options reach the ResEnsemble runs, which get their own folders
    assert results['cfg_options'] == {'model.decode_head.channels': 16}
    run_dir = tmp_path / 'cached-sample_seed0_model.decode_head.channels=16'
    assert (run_dir / 'iter_4.pth').is_file()
    dumped = Config.fromfile(str(next(run_dir.glob('*.py'))))
    assert dumped.model.decode_head.channels == 16
    e2e_dumped = Config.fromfile(str(next((tmp_path / 'e2e').glob('*.py'))))
    assert e2e_dumped.model.decode_head.channels == 64  # the E2E's own


def test_bench_latency_quick(tmp_path):
    out = run_script([
        'tools/benchmarks/bench_latency.py', SHAPES, '--quick', '--classes',
        '3', '--out',
        str(tmp_path / 'latency.json')
    ])
    assert 'E2E alone' in out and 'ResEns DDIM-1' in out
    results = json.load(open(tmp_path / 'latency.json'))
    assert results['steps'][0]['setting'] == 'E2E alone'
    assert results['classes'][0]['classes'] == 3
    assert all(r['seconds'] > 0 for r in results['steps'])


def test_bench_e2e_cache_speed_and_memory(tmp_path):
    out = run_script([
        'tools/benchmarks/bench_e2e_cache.py', '--iters', '2', '--warmup', '1',
        '--images', '4', '--batch-size', '2', '--work-dir',
        str(tmp_path)
    ])
    assert re.search(r'speed-up per iteration \(medians\): [0-9.]+x', out)
    peaks = re.findall(r'(on the fly|cached): ([0-9.]+) (KiB|MiB|GiB) peak',
                       out)
    assert [mode for mode, _, _ in peaks] == ['on the fly', 'cached']
    assert all(float(value) > 0 for _, value, _ in peaks)


def test_bench_e2e_cache_sizes(tmp_path):
    out = run_script([
        'tools/benchmarks/bench_e2e_cache.py', '--sizes', '--work-dir',
        str(tmp_path)
    ])
    # name, ..., bytes per image, images, total
    row = r' .* [0-9,]+ +[0-9]+ +[0-9.]+ (KiB|MiB|GiB)$'
    for name in ('CamVid', 'Cityscapes', 'ADE20K'):
        assert re.search(f'^{name}{row}', out, re.MULTILINE), out
