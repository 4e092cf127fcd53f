# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""The benchmark scripts' --quick smoke runs: they run and write tables."""
import json
import sys

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
        str(tmp_path / 'quality.json')
    ])
    assert 'E2E learner alone' in out and 'cached-sample ddim-1' in out
    results = json.load(open(tmp_path / 'quality.json'))
    assert {r['variant']
            for r in results['runs']} == {'cached-sample', 'onthefly-sample'}
    assert all(0 <= r['mIoU'] <= 100 for r in results['runs'])


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
