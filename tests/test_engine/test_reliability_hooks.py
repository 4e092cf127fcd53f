# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""NonFiniteLossHook, ResEnsembleSanityCheckHook and AtomicCheckpointHook
with real mmengine runners."""
import builtins
import os
import os.path as osp
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.fileio.backends import local_backend
from mmengine.hooks import Hook
from mmengine.logging import MessageHub, MMLogger
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset

import mmseg_resensemble.utils.atomic_write as atomic_module
from mmseg_resensemble.datasets import generate_shapes_dataset
from mmseg_resensemble.engine.hooks.atomic_checkpoint_hook import (
    AtomicCheckpointHook, AtomicLocalBackend)
from mmseg_resensemble.engine.hooks.non_finite_loss_hook import \
    NonFiniteLossHook
from mmseg_resensemble.engine.hooks.sanity_check_hook import \
    ResEnsembleSanityCheckHook
from mmseg_resensemble.models.decode_heads.residual_diffusion_head import \
    ResidualDiffusionHead
from tests.helpers import free_port, head_weights
from tests.tiny_models import fcn_e2e, head_cfg

K = 5  # the shapes data set's classes
SIZE = (24, 32)
TRAIN_PIPELINE = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs')
]


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('shapes'))
    return generate_shapes_dataset(root, dict(train=4, val=2), size=SIZE)


def dataset_cfg(root, split='train', pipeline=TRAIN_PIPELINE, **kwargs):
    return dict(
        type='SyntheticShapesDataset',
        data_root=root,
        data_prefix=dict(
            img_path=f'img_dir/{split}', seg_map_path=f'ann_dir/{split}'),
        pipeline=pipeline,
        **kwargs)


def resensemble_cfg(work_dir,
                    train_dataset,
                    max_iters=3,
                    custom_hooks=(),
                    checkpoint=None,
                    val_dataset=None,
                    num_classes=K):
    """A tiny ResEnsemble training config (random frozen E2E learner)."""
    cfg = dict(
        default_scope='mmseg',
        work_dir=work_dir,
        model=dict(
            type='ResEnsembleSegmentor',
            e2e=fcn_e2e(num_classes=num_classes),
            decode_head=head_cfg(num_classes=num_classes),
            test_cfg=dict(mode='whole', sampler='ddim', num_steps=1),
            allow_random_e2e=True),
        train_dataloader=dict(
            batch_size=2,
            num_workers=0,
            sampler=dict(type='InfiniteSampler', shuffle=True),
            dataset=train_dataset),
        train_cfg=dict(
            type='IterBasedTrainLoop', max_iters=max_iters, val_interval=100),
        optim_wrapper=dict(
            type='OptimWrapper',
            constructor='TrainableParamsOptimWrapperConstructor',
            optimizer=dict(type='SGD', lr=0.01)),
        custom_hooks=list(custom_hooks),
        default_hooks=dict(
            logger=dict(type='LoggerHook', interval=1), checkpoint=checkpoint),
        log_level='WARNING',
        randomness=dict(seed=0))
    if val_dataset is not None:
        cfg.update(
            val_dataloader=dict(
                batch_size=1,
                num_workers=0,
                sampler=dict(type='DefaultSampler', shuffle=False),
                dataset=val_dataset),
            val_cfg=dict(type='ValLoop'),
            val_evaluator=dict(type='IoUMetric'))
    return Config(cfg)


# ----------------------------------------------------------------------
# NonFiniteLossHook
# ----------------------------------------------------------------------
@pytest.fixture
def nan_at_second_iteration(monkeypatch):
    """The head's loss is NaN from its second call on."""
    original = ResidualDiffusionHead.loss
    calls = []

    def loss(self, *args, **kwargs):
        losses = original(self, *args, **kwargs)
        calls.append(1)
        if len(calls) >= 2:
            losses['loss_diffusion'] = losses['loss_diffusion'] * float('nan')
        return losses

    monkeypatch.setattr(ResidualDiffusionHead, 'loss', loss)


def test_training_stops_at_the_non_finite_iteration(tmp_path, data_root,
                                                    nan_at_second_iteration):
    work_dir = str(tmp_path)
    cfg = resensemble_cfg(
        work_dir,
        dataset_cfg(data_root),
        custom_hooks=[dict(type='NonFiniteLossHook')],
        checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=1))
    runner = Runner.from_cfg(cfg)
    with pytest.raises(FloatingPointError) as info:
        runner.train()
    message = str(info.value)
    assert 'iteration 2:' in message
    assert 'decode.loss_diffusion=nan' in message and 'loss=nan' in message
    assert osp.join(work_dir, 'iter_1.pth') in message
    # the poisoned weights of iteration 2 were never saved
    assert osp.isfile(osp.join(work_dir, 'iter_1.pth'))
    assert not osp.exists(osp.join(work_dir, 'iter_2.pth'))
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        assert f.read().endswith('iter_1.pth')
    assert all(
        torch.isfinite(v).all()
        for v in head_weights(osp.join(work_dir, 'iter_1.pth')).values())


def test_without_the_hook_training_saves_nan_weights(tmp_path, data_root,
                                                     nan_at_second_iteration):
    """What the hook prevents: mmengine trains on and saves NaN weights."""
    cfg = resensemble_cfg(
        str(tmp_path),
        dataset_cfg(data_root),
        checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=3))
    Runner.from_cfg(cfg).train()
    state = head_weights(osp.join(str(tmp_path), 'iter_3.pth'))
    assert any(torch.isnan(v).any() for v in state.values())


def fake_runner(it=0):
    return SimpleNamespace(
        iter=it,
        epoch=0,
        train_loop=object(),
        model=nn.Linear(2, 2),
        logger=MMLogger.get_current_instance(),
        message_hub=MessageHub.get_current_instance())


def test_non_finite_loss_hook_checks():
    hook = NonFiniteLossHook()
    outputs = dict(
        loss=torch.tensor(float('inf')),
        **{
            'decode.loss_diffusion': torch.tensor(float('inf')),
            'decode.acc_seg': torch.tensor(float('nan')),  # not a loss
            'aux.loss_ce': torch.tensor(0.5)
        })
    assert list(
        hook.non_finite_losses(outputs)) == ['loss', 'decode.loss_diffusion']
    with pytest.raises(
            FloatingPointError,
            match=r'iteration 8: losses '
            r'loss=inf, decode\.loss_diffusion=inf'):
        hook.after_train_iter(fake_runner(7), 0, outputs=outputs)
    # finite outputs pass
    hook.after_train_iter(fake_runner(8), 0, outputs=dict(loss=torch.ones(())))

    # a finite loss with non-finite weights (from non-finite gradients)
    runner = fake_runner(3)
    with torch.no_grad():
        runner.model.bias[0] = float('nan')
    NonFiniteLossHook().after_train_iter(
        runner, 0, outputs=dict(loss=torch.ones(())))
    with pytest.raises(FloatingPointError, match='parameters bias'):
        NonFiniteLossHook(check_params=True).after_train_iter(
            runner, 0, outputs=dict(loss=torch.ones(())))

    # max_consecutive=2 tolerates an isolated one, not two in a row
    hook = NonFiniteLossHook(max_consecutive=2)
    nan = dict(loss=torch.tensor(float('nan')))
    hook.after_train_iter(fake_runner(0), 0, outputs=nan)
    hook.after_train_iter(fake_runner(1), 0, outputs=dict(loss=torch.ones(())))
    hook.after_train_iter(fake_runner(2), 0, outputs=nan)
    with pytest.raises(FloatingPointError, match='iteration 4'):
        hook.after_train_iter(fake_runner(3), 0, outputs=nan)

    # interval: only every n-th iteration is checked
    NonFiniteLossHook(interval=2).after_train_iter(
        fake_runner(0), 0, outputs=nan)
    for kwargs in (dict(interval=0), dict(max_consecutive=0)):
        with pytest.raises(ValueError, match=list(kwargs)[0]):
            NonFiniteLossHook(**kwargs)


# ----------------------------------------------------------------------
# ResEnsembleSanityCheckHook
# ----------------------------------------------------------------------
class IterationProbe(Hook):
    priority = 'LOWEST'

    def __init__(self):
        self.iterations = 0

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.iterations += 1


def runner_with_probe(cfg):
    """A Runner of ``cfg`` and an :class:`IterationProbe` registered in
    it."""
    runner = Runner.from_cfg(cfg)
    probe = IterationProbe()
    runner.register_hook(probe)
    return runner, probe


def test_dataset_class_count_must_match_the_model(tmp_path, data_root):
    # the user keeps 4 of the 5 classes and forgets the model's num_classes
    four = ('background', 'disc', 'box', 'triangle')
    dataset = dataset_cfg(
        data_root, metainfo=dict(classes=four, palette=[[0, 0, 0]] * 4))
    cfg = resensemble_cfg(
        str(tmp_path),
        dataset,
        custom_hooks=[dict(type='ResEnsembleSanityCheckHook')])
    runner, probe = runner_with_probe(cfg)
    with pytest.raises(ValueError) as info:
        runner.train()
    message = str(info.value)
    assert "the train data set (len(dataset.metainfo['classes'])) has 4" in (
        message)
    assert 'the E2E learner (model.e2e_num_classes) has 5' in message
    assert 'the diffusion head (model.decode_head.num_classes) has 5' in (
        message)
    assert probe.iterations == 0  # before the first iteration

    # the val set is checked before each validation (here: a 4-class one)
    runner = Runner.from_cfg(
        resensemble_cfg(
            str(tmp_path / 'val'),
            dataset_cfg(data_root),
            val_dataset=dataset_cfg(
                data_root,
                'val',
                metainfo=dict(classes=four, palette=[[0, 0, 0]] * 4)),
            custom_hooks=[dict(type='ResEnsembleSanityCheckHook')]))
    with pytest.raises(ValueError, match='the val data set .* has 4'):
        runner.val()


def test_e2e_and_head_class_counts_must_match(data_root):
    from mmseg.registry import MODELS
    with pytest.raises(ValueError, match='num_classes=5.*num_classes=4'):
        MODELS.build(
            dict(
                type='ResEnsembleSegmentor',
                e2e=fcn_e2e(num_classes=5),
                decode_head=head_cfg(num_classes=4)))


@pytest.mark.parametrize('serialize_data', [True, False])
def test_empty_split_is_refused_naming_the_folder(tmp_path, serialize_data):
    """The plugin's data sets refuse an empty split while they are built
    (mmengine's serialisation would fail with 'need at least one array to
    concatenate', and without it InfiniteSampler loops forever)."""
    os.makedirs(tmp_path / 'empty' / 'img_dir' / 'train')
    os.makedirs(tmp_path / 'empty' / 'ann_dir' / 'train')
    cfg = resensemble_cfg(
        str(tmp_path / 'work'),
        dataset_cfg(str(tmp_path / 'empty'), serialize_data=serialize_data),
        custom_hooks=[dict(type='ResEnsembleSanityCheckHook')])
    with pytest.raises(
            ValueError,
            match=r'SyntheticShapesDataset: no samples found in .*'
            r'empty/img_dir/train'):
        Runner.from_cfg(cfg).train()


def test_empty_dataset_is_refused_by_the_hook(tmp_path):
    """An MMSeg data set without the plugin's check builds empty with
    serialize_data=False; the hook refuses it before training."""
    os.makedirs(tmp_path / 'empty' / 'img_dir' / 'train')
    os.makedirs(tmp_path / 'empty' / 'ann_dir' / 'train')
    dataset = dataset_cfg(str(tmp_path / 'empty'), serialize_data=False)
    dataset.update(
        type='BaseSegDataset',
        metainfo=dict(classes=tuple(f'c{i}' for i in range(K))))
    cfg = resensemble_cfg(
        str(tmp_path / 'work'),
        dataset,
        custom_hooks=[dict(type='ResEnsembleSanityCheckHook')])
    with pytest.raises(
            ValueError,
            match=r'the train data set is empty: '
            r'BaseSegDataset data_root=.*empty'):
        Runner.from_cfg(cfg).train()


def test_check_transform_channels_must_match_the_preprocessor(
        tmp_path, data_root):
    pipeline = TRAIN_PIPELINE[:2] + [
        dict(type='CheckImageAndLabel', num_channels=4), TRAIN_PIPELINE[2]
    ]
    cfg = resensemble_cfg(
        str(tmp_path),
        dataset_cfg(data_root, pipeline=pipeline),
        custom_hooks=[dict(type='ResEnsembleSanityCheckHook')])
    with pytest.raises(
            ValueError,
            match=r"num_channels=4\) but the data preprocessor's mean has 3"):
        Runner.from_cfg(cfg).train()


@pytest.fixture
def bad_root(tmp_path):
    """The shapes set with one grayscale image and one mis-sized label."""
    root = generate_shapes_dataset(
        str(tmp_path / 'bad'), dict(train=4, val=2), size=SIZE)
    img = cv2.imread(osp.join(root, 'img_dir/train/00001.png'))
    cv2.imwrite(
        osp.join(root, 'img_dir/train/00001.png'),
        cv2.cvtColor(img, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(
        osp.join(root, 'ann_dir/train/00003.png'),
        np.zeros((SIZE[0] + 2, SIZE[1]), np.uint8))
    cv2.imwrite(
        osp.join(root, 'ann_dir/val/00001.png'),
        np.zeros((SIZE[0], SIZE[1] - 4), np.uint8))
    return root


UNCHANGED_PIPELINE = [
    dict(type='LoadImageFromFile', color_type='unchanged'),
    dict(type='LoadAnnotations'),
    dict(type='CheckImageAndLabel'),
    dict(type='PackSegInputs')
]


def test_scan_files_finds_bad_files_before_training(tmp_path, bad_root):
    cfg = resensemble_cfg(
        str(tmp_path / 'work'),
        dataset_cfg(bad_root, pipeline=UNCHANGED_PIPELINE),
        custom_hooks=[
            dict(type='ResEnsembleSanityCheckHook', scan_files=True)
        ])
    runner, probe = runner_with_probe(cfg)
    with pytest.raises(ValueError) as info:
        runner.train()
    message = str(info.value)
    assert '2 bad sample(s) in the train data set' in message
    assert 'img_dir/train/00001.png has 1 channel(s)' in message
    assert 'ann_dir/train/00003.png is 26x32' in message
    assert probe.iterations == 0

    # the val set, before validation
    runner = Runner.from_cfg(
        resensemble_cfg(
            str(tmp_path / 'val'),
            dataset_cfg(bad_root, pipeline=UNCHANGED_PIPELINE),
            val_dataset=dataset_cfg(
                bad_root, 'val', pipeline=UNCHANGED_PIPELINE)))
    with pytest.raises(
            ValueError,
            match=r'(?s)1 bad sample\(s\) in the val .*'
            r'ann_dir/val/00001.png is 24x28'):
        ResEnsembleSanityCheckHook(scan_val_files=True).before_val(runner)


def test_scan_files_passes_good_files(tmp_path, data_root):
    cfg = resensemble_cfg(
        str(tmp_path),
        dataset_cfg(data_root, pipeline=UNCHANGED_PIPELINE),
        max_iters=1,
        # MMSeg's test pipelines resize the image before loading the label
        val_dataset=dataset_cfg(
            data_root,
            'val',
            pipeline=[
                dict(type='LoadImageFromFile'),
                dict(type='Resize', scale=(16, 12), keep_ratio=True),
                dict(type='LoadAnnotations'),
                dict(type='CheckImageAndLabel'),
                dict(type='PackSegInputs')
            ]),
        custom_hooks=[
            dict(
                type='ResEnsembleSanityCheckHook',
                scan_files=True,
                scan_val_files=True)
        ])
    cfg.train_cfg.val_interval = 1
    runner, probe = runner_with_probe(cfg)
    runner.train()
    assert probe.iterations == 1
    with pytest.raises(ValueError, match='needs a CheckImageAndLabel or'):
        ResEnsembleSanityCheckHook(scan_files=True).before_train(
            Runner.from_cfg(
                resensemble_cfg(
                    str(tmp_path / 'plain'),
                    dataset_cfg(
                        data_root,
                        pipeline=[
                            dict(type='LoadImageFromFile'),
                            dict(type='PackSegInputs')
                        ]))))
    with pytest.raises(ValueError, match='scan_files'):
        ResEnsembleSanityCheckHook(scan_files=1)


@pytest.fixture
def broken_labels_root(tmp_path):
    """The shapes set with a label value 7 (5 classes) and a truncated
    label PNG."""
    root = generate_shapes_dataset(
        str(tmp_path / 'broken'), dict(train=4, val=2), size=SIZE)
    label = cv2.imread(
        osp.join(root, 'ann_dir/train/00000.png'), cv2.IMREAD_UNCHANGED)
    label[0, 0] = 7
    cv2.imwrite(osp.join(root, 'ann_dir/train/00000.png'), label)
    path = osp.join(root, 'ann_dir/train/00002.png')
    with open(path, 'rb') as f:
        data = f.read()
    with open(path, 'wb') as f:
        f.write(data[:len(data) // 2])
    return root


def test_scan_without_check_transform_names_the_label_files(
        tmp_path, broken_labels_root):
    """A pipeline without CheckImageAndLabel is scanned with the model's
    class count; an unreadable label is reported as the label map, not as
    its image."""
    cfg = resensemble_cfg(
        str(tmp_path / 'work'),
        dataset_cfg(broken_labels_root),
        custom_hooks=[
            dict(type='ResEnsembleSanityCheckHook', scan_files=True)
        ])
    runner, probe = runner_with_probe(cfg)
    with pytest.raises(ValueError) as info:
        runner.train()
    message = str(info.value)
    assert '2 bad sample(s) in the train data set' in message
    assert ('label map ' +
            osp.join(broken_labels_root, 'ann_dir/train/00000.png') +
            ' has values [7]') in message
    assert ('label map ' +
            osp.join(broken_labels_root, 'ann_dir/train/00002.png') +
            ': cannot be read by LoadAnnotations') in message
    assert probe.iterations == 0


def test_out_of_range_labels_in_training_name_the_file(tmp_path,
                                                       broken_labels_root):
    """Without the checks, the head names the label map and gives the
    right hint (not 'the dataset has more classes than the model')."""
    os.remove(osp.join(broken_labels_root, 'ann_dir/train/00002.png'))
    os.remove(osp.join(broken_labels_root, 'img_dir/train/00002.png'))
    cfg = resensemble_cfg(
        str(tmp_path / 'work'), dataset_cfg(broken_labels_root), max_iters=4)
    cfg.train_dataloader.sampler.shuffle = False
    cfg.train_dataloader.batch_size = 1
    with pytest.raises(ValueError) as info:
        Runner.from_cfg(cfg).train()
    message = str(info.value)
    assert 'labels [7] are out of range for num_classes=5' in message
    assert 'more classes than the model' not in message
    assert 'reduce_zero_label' in message
    assert osp.join(broken_labels_root, 'ann_dir/train/00000.png') in message


def test_training_on_a_random_e2e_learner_is_refused(tmp_path, data_root):
    cfg = resensemble_cfg(
        str(tmp_path / 'random'),
        dataset_cfg(data_root),
        max_iters=1,
        custom_hooks=[dict(type='ResEnsembleSanityCheckHook')],
        checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=1))
    cfg.model.allow_random_e2e = False
    runner, probe = runner_with_probe(cfg)
    with pytest.raises(ValueError, match='allow_random_e2e=True') as info:
        runner.train()
    assert "E2E learner's weights were never loaded" in str(info.value)
    assert probe.iterations == 0
    # opting in trains, and its checkpoint holds E2E weights: loading it
    # (load_from, as --resume) makes the same model trainable
    cfg.model.allow_random_e2e = True
    runner, probe = runner_with_probe(cfg)
    runner.train()
    assert probe.iterations == 1
    cfg.model.allow_random_e2e = False
    # an e2e_checkpoint file that does not exist is the same: refused
    absent = str(tmp_path / 'absent_e2e.pth')
    cfg.model.e2e_checkpoint = absent
    cfg.work_dir = str(tmp_path / 'absent')
    runner, probe = runner_with_probe(cfg)
    with pytest.raises(ValueError, match='does not exist') as info:
        runner.train()
    assert absent in str(info.value)
    assert probe.iterations == 0
    cfg.work_dir = str(tmp_path / 'loaded')
    cfg.load_from = osp.join(str(tmp_path / 'random'), 'iter_1.pth')
    runner, probe = runner_with_probe(cfg)
    runner.train()
    assert probe.iterations == 1
    with pytest.raises(ValueError, match='allow_random_e2e must be a bool'):
        cfg.model.allow_random_e2e = 'yes'
        Runner.from_cfg(cfg)


# ----------------------------------------------------------------------
# AtomicCheckpointHook
# ----------------------------------------------------------------------
class ToyModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 1)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.linear(torch.stack(inputs))
        if mode == 'loss':
            return dict(loss=out.pow(2).mean())
        return out


class ToyDataset(Dataset):

    def __len__(self):
        return 8

    def __getitem__(self, idx):
        return dict(inputs=torch.full((4, ), float(idx)))


class ReadCheckpoint(Hook):
    """Keep the bytes of iter_3.pth right after it is written."""
    priority = 'LOWEST'

    def __init__(self):
        self.saved = None

    def after_train_iter(self,
                         runner,
                         batch_idx,
                         data_batch=None,
                         outputs=None):
        path = osp.join(runner.work_dir, 'iter_3.pth')
        if runner.iter + 1 == 3:
            with open(path, 'rb') as f:
                self.saved = f.read()


def toy_runner(work_dir, hook_type, max_keep_ckpts=-1, resume=False):
    runner = Runner(
        model=ToyModel(),
        work_dir=work_dir,
        train_dataloader=dict(
            batch_size=2,
            num_workers=0,
            sampler=dict(type='InfiniteSampler', shuffle=False),
            dataset=ToyDataset()),
        train_cfg=dict(by_epoch=False, max_iters=6),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        default_hooks=dict(
            checkpoint=dict(
                type=hook_type,
                by_epoch=False,
                interval=3,
                max_keep_ckpts=max_keep_ckpts)),
        resume=resume,
        default_scope='mmseg',
        log_level='WARNING')
    probe = ReadCheckpoint()
    runner.register_hook(probe)
    return runner, probe


class HalfWriter:
    """A file whose write stops half-way, as a killed process's would."""

    def __init__(self, f):
        self.f = f

    def write(self, data):
        self.f.write(data[:len(data) // 2])
        self.f.flush()
        raise RuntimeError('simulated crash during the checkpoint write')

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


@pytest.fixture
def crash_writing_iter_6(monkeypatch):
    """Writes of a file named after iter_6 stop half-way (in mmengine's
    LocalBackend and in AtomicLocalBackend alike)."""
    real_open = builtins.open

    def fake_open(file, mode='r', *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        if ('w' in mode or 'x' in mode) and 'iter_6' in str(file):
            return HalfWriter(f)
        return f

    for module in (local_backend, atomic_module):
        monkeypatch.setattr(module, 'open', fake_open, raising=False)


def loadable(path):
    try:
        return torch.load(path)['meta']['iter']
    except Exception:
        return None


def last_checkpoint(work_dir):
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        return f.read()


def partial_files(work_dir):
    return [n for n in os.listdir(work_dir) if n.endswith('.partial')]


def test_atomic_checkpoints_are_complete(tmp_path):
    work_dir = str(tmp_path)
    runner, _ = toy_runner(work_dir, 'AtomicCheckpointHook', max_keep_ckpts=1)
    runner.train()
    hook = next(h for h in runner.hooks if isinstance(h, AtomicCheckpointHook))
    assert isinstance(hook.file_backend, AtomicLocalBackend)
    path = osp.join(work_dir, 'iter_6.pth')
    ckpt = torch.load(path)  # weights_only
    assert ckpt['meta']['iter'] == 6
    for k, v in runner.model.state_dict().items():
        assert torch.equal(ckpt['state_dict'][k], v), k
    assert not osp.exists(osp.join(work_dir, 'iter_3.pth'))  # max_keep
    assert last_checkpoint(work_dir) == path
    assert partial_files(work_dir) == []
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize('max_keep_ckpts', [-1, 1])
def test_mmengine_checkpoint_hook_leaves_a_truncated_file(
        tmp_path, crash_writing_iter_6, max_keep_ckpts):
    """The premise: a write killed half-way leaves a truncated iter_6.pth;
    last_checkpoint still names iter_3.pth, which max_keep_ckpts=1 has
    already deleted."""
    work_dir = str(tmp_path)
    runner, probe = toy_runner(work_dir, 'CheckpointHook', max_keep_ckpts)
    with pytest.raises(RuntimeError, match='simulated crash'):
        runner.train()
    assert osp.isfile(osp.join(work_dir, 'iter_6.pth'))
    assert loadable(osp.join(work_dir, 'iter_6.pth')) is None  # truncated
    assert last_checkpoint(work_dir) == osp.join(work_dir, 'iter_3.pth')
    if max_keep_ckpts == 1:  # nothing left to resume from
        assert not osp.exists(osp.join(work_dir, 'iter_3.pth'))
    else:
        assert loadable(osp.join(work_dir, 'iter_3.pth')) == 3


@pytest.mark.parametrize('max_keep_ckpts', [-1, 1])
def test_interrupted_atomic_write_keeps_the_previous_checkpoint(
        tmp_path, monkeypatch, crash_writing_iter_6, max_keep_ckpts):
    work_dir = str(tmp_path)
    runner, probe = toy_runner(work_dir, 'AtomicCheckpointHook',
                               max_keep_ckpts)
    with pytest.raises(RuntimeError, match='simulated crash'):
        runner.train()
    assert not osp.exists(osp.join(work_dir, 'iter_6.pth'))
    assert partial_files(work_dir) == []
    previous = osp.join(work_dir, 'iter_3.pth')
    with open(previous, 'rb') as f:
        assert f.read() == probe.saved  # intact
    assert last_checkpoint(work_dir) == previous

    # a partial file of a run killed outright is removed at the next start,
    # and the run resumes from iter_3.pth
    monkeypatch.undo()
    stale = osp.join(work_dir, '.iter_6.pth.123.0123abcd.partial')
    with open(stale, 'wb') as f:
        f.write(b'half')
    runner, _ = toy_runner(
        work_dir, 'AtomicCheckpointHook', max_keep_ckpts, resume=True)
    runner.train()
    assert not osp.exists(stale)
    assert loadable(osp.join(work_dir, 'iter_6.pth')) == 6
    assert last_checkpoint(work_dir) == osp.join(work_dir, 'iter_6.pth')
    assert osp.exists(previous) == (max_keep_ckpts == -1)


# ----------------------------------------------------------------------
# two processes (gloo)
# ----------------------------------------------------------------------
def _two_ranks(rank, port, root, results):
    import torch.distributed as dist
    from mmseg.registry import DATASETS

    import tests.conftest  # noqa: F401  (registers, default scope)
    dist.init_process_group(
        'gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=2)
    out = {}
    # only rank 1's loss is NaN: both ranks stop at the same iteration
    loss = float('nan') if rank == 1 else 1.
    try:
        NonFiniteLossHook().after_train_iter(
            fake_runner(4), 0, outputs=dict(loss=torch.tensor(loss)))
        out['nan'] = 'no error'
    except FloatingPointError as e:
        out['nan'] = str(e)
    # each rank scans half of the samples; both report both bad files
    dataset = DATASETS.build(dataset_cfg(root, pipeline=UNCHANGED_PIPELINE))
    try:
        ResEnsembleSanityCheckHook.scan(dataset, 'train')
        out['scan'] = 'no error'
    except ValueError as e:
        out['scan'] = str(e)
    results[rank] = out
    dist.destroy_process_group()


def test_hooks_agree_across_ranks(bad_root):
    import torch.multiprocessing as mp
    port = free_port()
    results = mp.Manager().dict()
    mp.spawn(_two_ranks, args=(port, bad_root, results), nprocs=2)
    assert 'iteration 5: on another rank' in results[0]['nan']
    assert 'iteration 5: rank 1: losses loss=nan' in results[1]['nan']
    for rank in (0, 1):
        scan = results[rank]['scan']
        assert '2 bad sample(s)' in scan, scan
        assert '00001.png has 1 channel(s)' in scan
        assert '00003.png is 26x32' in scan
