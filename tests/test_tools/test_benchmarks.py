# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""The benchmark scripts' --quick smoke runs: they run and write tables."""
import importlib.util
import json
import re
import sys

import cv2
import numpy as np
import pytest
from mmengine.config import Config

from mmseg_resensemble.datasets import (SyntheticShapesDataset,
                                        generate_shapes_dataset)
from mmseg_resensemble.datasets.folder_layout import FolderLayout
from tests.test_tools.test_train_test_tools import run

SHAPES = ('configs/resensemble/'
          'resensemble_fcn-m-v2-d8_1xb8-2k_shapes-96x128.py')


def load_tool(path: str):
    """A tool script as a module (its functions, called in-process)."""
    name = path.rsplit('/', 1)[-1][:-3]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
        '3', '--steps', '1', '2', '--out',
        str(tmp_path / 'latency.json')
    ])
    assert 'E2E alone' in out and 'ResEns DDIM-2' in out
    results = json.load(open(tmp_path / 'latency.json'))
    assert results['steps'][0]['setting'] == 'E2E alone'
    assert results['classes'][0]['classes'] == 3
    assert all(r['seconds'] > 0 for r in results['steps'])
    png = cv2.imread(str(tmp_path / 'latency_latency_vs_steps.png'))
    assert png is not None and png.shape[0] > 100


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


def folder_dataset_root(root, classes):
    """A data set in the shared folder layout: train/test, classes.txt."""
    generate_shapes_dataset(str(root), dict(train=6, test=3), seed=2)
    (root / 'classes.txt').write_text(''.join(f'{c}\n' for c in classes))
    return root


def test_bench_quality_folder_quick(tmp_path):
    """--data-root on a folder it has never seen: every row of the
    comparison runs and lands in the table and the JSON."""
    root = folder_dataset_root(tmp_path / 'data',
                               SyntheticShapesDataset.METAINFO['classes'])
    out = run_script([
        'tools/benchmarks/bench_quality.py', '--quick', '--data-root',
        str(root), '--work-dir',
        str(tmp_path / 'runs'), '--variants', 'resensemble', 'paper',
        'refiner-ce', 'plain-ddpm', 'resensemble-oof', '--folds', '2',
        '--crop', '48', '64', '--max-images', '2', '--out',
        str(tmp_path / 'folder.json'), '--pretrained', 'none', '--cfg-options',
        'model.decode_head.channels=16'
    ])
    results = json.load(open(tmp_path / 'folder.json'))
    assert results['eval_images'] == 2  # of the 3 test images
    rows = {(r['variant'], r['sampler']) for r in results['runs']}
    assert rows == {('resensemble', 'ddim-1'), ('paper', 'ddim-1'),
                    ('paper', 'ddpm'), ('refiner-ce', 'ddim-1'),
                    ('plain-ddpm', 'ddim-1'), ('resensemble-oof', 'ddim-1'),
                    ('e2e', '-'), ('e2e-longer', '-')}
    assert all(0 <= r['mIoU'] <= 100 for r in results['runs'])
    assert len(results['runs'][0]['IoU']) == 5
    assert results['classes'] == list(
        SyntheticShapesDataset.METAINFO['classes'])
    for row in ('resensemble ddim-1', 'paper ddpm (1 img)', 'e2e-longer',
                'E2E on those images'):
        assert row in out, out[-3000:]
    # each run is a plain MMSeg config file in its folder
    cfg = Config.fromfile(
        str(tmp_path / 'runs' / 'resensemble_seed0_'
            'model.decode_head.channels=16' / 'config.py'))
    assert cfg.model.decode_head.channels == 16
    assert cfg.train_dataloader.dataset.type == 'BaseSegDataset'
    # out-of-fold: each training image's x̂0 comes from the fold learner
    # that did not see it, and its entry says which
    learners = {}
    for entry in (tmp_path / 'runs' / 'e2e_cache_oof2' / 'entries').iterdir():
        header = json.loads(str(np.load(entry)['header']))
        name = header['key'].rsplit('/', 1)[-1].rsplit('.', 1)[0]
        learners[name] = header['learner']
    assert len(learners) == 6
    for fold in (0, 1):
        fold_dir = tmp_path / 'runs' / f'e2e_fold{fold}of2'
        held_out = fold_dir.joinpath('held_out.txt').read_text().split()
        kept = fold_dir.joinpath('train.txt').read_text().split()
        assert len(held_out) == 3 and not set(held_out) & set(kept)
        assert all(learners[n] == f'fold{fold}' for n in held_out)
    # the in-sample cache's entries come from the E2E learner itself
    entry = next((tmp_path / 'runs' / 'e2e_cache' / 'entries').iterdir())
    assert json.loads(str(np.load(entry)['header']))['learner'] == 'e2e'


def test_bench_quality_folder_two_classes(tmp_path):
    """A two-class set also reports the foreground IoU and Dice; with
    --uncertainty every prediction's calibration and error detection, and
    the figures beside the JSON."""
    root = tmp_path / 'data'
    generate_shapes_dataset(str(root), dict(train=4, val=1, test=2), seed=3)
    for label in root.glob('ann_dir/*/*.png'):
        img = cv2.imread(str(label), cv2.IMREAD_UNCHANGED)
        cv2.imwrite(str(label), np.where(img == 255, 255, (img > 0) * 1))
    (root / 'classes.txt').write_text('background\nobject\n')
    out = run_script([
        'tools/benchmarks/bench_quality.py', '--quick', '--data-root',
        str(root), '--work-dir',
        str(tmp_path / 'runs'), '--no-matched', '--crop', '48', '64',
        '--pretrained', 'none', '--eval-split', 'val', '--variants',
        'resensemble', 'refiner-ce', 'resensemble+ce+tsampler+selfalign+guard',
        'refiner-ce+lovasz', '--ablation-samplers', 'ddim-1', '--samplers',
        'ddim-1', 'ddim-2', 'ddim-1x2-eta1', '--uncertainty', '--error-pixels',
        '50', '--out',
        str(tmp_path / 'two.json'), '--cfg-options',
        'model.decode_head.channels=16'
    ])
    results = json.load(open(tmp_path / 'two.json'))
    assert results['eval_split'] == 'val'
    for row in results['runs']:
        assert 0 <= row['Dice'] <= 100 and 0 <= row['fg_IoU'] <= 100
        # Dice = 2 IoU / (1 + IoU)
        iou = row['fg_IoU'] / 100
        assert abs(row['Dice'] / 100 - 2 * iou / (1 + iou)) < 1e-6
        cal = row['calibration']
        assert 0 <= cal['ECE'] <= 100 and cal['NLL'] > 0
        assert 0 <= cal['Brier'] <= 2 and sum(
            cal['reliability']['count']) == cal['pixels']
        det = row['error_detection']
        assert det['pixels'] == 50  # one image of the val split
        assert '1-maxp' in det
    runs = {(r['variant'], r['sampler']): r for r in results['runs']}
    # the spread of several samples, beside the E2E learner's baseline
    assert set(runs['resensemble', 'ddim-1x2-eta1']['error_detection']) >= {
        'spread', 'e2e 1-maxp', '1-maxp'
    }
    assert 'spread' not in runs['resensemble', 'ddim-1']['error_detection']
    # every ensemble is scored on the same pixels as the E2E learner
    assert runs['e2e', '-']['calibration']['pixels'] == runs[
        'resensemble', 'ddim-1']['calibration']['pixels']
    assert 'Dice' in out and 'error detection' in out and 'ECE %' in out
    # the changes of a variant name, in its config; the weight is chosen on
    # the validation split and stored with the checkpoint
    guard = runs['resensemble+ce+tsampler+selfalign+guard', 'ddim-1']
    assert 0 <= guard['chosen_weight'] <= 1
    cfg = Config.fromfile(
        str(tmp_path / 'runs' / 'resensemble+ce+tsampler+selfalign+guard_'
            'seed0_model.decode_head.channels=16' / 'config.py'))
    assert cfg.model.train_cfg == dict(timesteps='sampler', self_aligned=0.5)
    assert cfg.model.decode_head.loss_ensemble[0].type == 'CrossEntropyLoss'
    assert cfg.model.test_cfg.ensemble_weight == 'auto'
    hook = cfg.custom_hooks[-1]
    assert hook.type == 'EnsembleWeightHook'
    assert hook.dataloader.dataset.data_prefix.img_path == 'img_dir/val'
    refiner = Config.fromfile(
        str(tmp_path / 'runs' / 'refiner-ce+lovasz_seed0_'
            'model.decode_head.channels=16' / 'config.py'))
    assert [loss.type for loss in refiner.model.decode_head.loss_decode
            ] == ['CrossEntropyLoss', 'LovaszLoss']
    for name in ('per_class_iou', 'reliability', 'miou_vs_steps'):
        png = cv2.imread(str(tmp_path / f'two_{name}.png'))
        assert png is not None and png.shape[0] > 100, name


def test_bench_quality_holds_out_training_images_without_a_val_split(tmp_path):
    """The ensemble weight is never chosen on the test split: without a
    validation split every fifth training image is held out of the head's
    training for it."""
    bench = load_tool('tools/benchmarks/bench_quality.py')
    layout = FolderLayout(
        data_root=str(tmp_path),
        classes=['a', 'b'],
        splits=dict(train=[f'im{i}' for i in range(10)], test=['t0']))
    (split, held_file), kept_file = bench.held_out_split(layout, str(tmp_path))
    held = open(held_file).read().split()
    kept = open(kept_file).read().split()
    assert split == 'train' and held == ['im0', 'im5']
    assert sorted(held + kept) == sorted(layout.splits['train'])
    assert not set(held) & set(kept)
    layout.splits['val'] = ['v0']
    assert bench.held_out_split(layout, str(tmp_path)) == (('val', None), None)
    head, train_cfg, guard = bench.variant_changes('refiner-ce+lovasz+guard')
    assert guard and head['type'] == 'E2ERefinerHead'
    assert [loss['type'] for loss in head['loss_decode']
            ] == ['CrossEntropyLoss', 'LovaszLoss']
    assert not bench.known_variant('resensemble+nope')


def test_bench_quality_sampler_names():
    """Sampler names of --samplers: steps, samples, truncated start and
    ensemble weight."""
    bench = load_tool('tools/benchmarks/bench_quality.py')
    assert bench.sampler_cfg('ddpm') == dict(
        sampler='ddpm', num_steps=None, num_samples=1)
    assert bench.sampler_cfg('ddim-2x4') == dict(
        sampler='ddim', num_steps=2, num_samples=4)
    assert bench.sampler_cfg('ddim-1-from300-w0.7') == dict(
        sampler='ddim',
        num_steps=1,
        num_samples=1,
        start_step=300,
        ensemble_weight=0.7)
    assert bench.sampler_cfg('ddim-1-w.6')['ensemble_weight'] == 0.6
    assert bench.sampler_cfg('ddim-2x8-eta1-from500') == dict(
        sampler='ddim', num_steps=2, num_samples=8, eta=1.0, start_step=500)
    for bad in ('ddim', 'ddim-1-w', 'ddim-1-w0.5-from3', 'dpm-1', 'ddpm-eta1',
                'ddim-1-from3-eta1'):
        with pytest.raises(ValueError, match='is not ddpm'):
            bench.sampler_cfg(bad)


def test_bench_quality_samplers_do_not_inherit_settings():
    """Each sampler of a scoring pass runs on the model's own test_cfg plus
    its own settings, not on what the previous sampler left (a truncated
    start must not leak into the next sampler)."""
    import torch
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    bench = load_tool('tools/benchmarks/bench_quality.py')
    seen = []

    class Stub(torch.nn.Module):

        def __init__(self):
            super().__init__()
            self.decode_head = torch.nn.Identity()
            self.e2e = torch.nn.Module()
            self.e2e.extract_feat = lambda inputs: inputs
            self.test_cfg = dict(mode='whole', seed=0)

        def data_preprocessor(self, batch, training):
            return batch

        def predict(self, inputs, samples):
            seen.append(dict(self.test_cfg))
            out = SegDataSample()
            out.pred_sem_seg = PixelData(data=torch.zeros(1, 2, 2).long())
            out.e2e_pred_sem_seg = out.pred_sem_seg
            return [out]

    sample = SegDataSample()
    sample.gt_sem_seg = PixelData(data=torch.zeros(1, 2, 2).long())
    loader = [dict(inputs=torch.zeros(1, 3, 2, 2), data_samples=[sample])]
    bench.score_run(Stub(), loader, 2,
                    ['ddim-1-from300', 'ddim-1-w0.6', 'ddim-2'], set())
    assert seen[0]['start_step'] == 300
    assert 'start_step' not in seen[1] and seen[1]['ensemble_weight'] == 0.6
    assert 'ensemble_weight' not in seen[2] and seen[2]['num_steps'] == 2
    assert all(s['mode'] == 'whole' and s['seed'] == 0 for s in seen)


def test_bench_latency_flops_are_positive_and_add_up():
    bench = load_tool('tools/benchmarks/bench_latency.py')
    cfg = Config.fromfile(SHAPES)
    flops = {}
    for block in ('dense', 'separable'):
        cfg.model.decode_head.denoiser.block_type = block
        flops[block] = bench.count_flops(bench.build(cfg), (64, 96))
        parts = flops[block]
        assert all(p['macs'] > 0 and p['params'] > 0 for p in parts.values())
        # the whole DDIM-1 prediction, traced in one piece, is the E2E
        # learner, the condition and one step (and a few resizes)
        total = sum(parts[k]['macs'] for k in ('e2e', 'condition', 'step'))
        assert total <= parts['ddim1']['macs'] <= 1.01 * total
    assert flops['separable']['step']['macs'] < (
        0.5 * flops['dense']['step']['macs'])
    assert flops['separable']['e2e'] == flops['dense']['e2e']
