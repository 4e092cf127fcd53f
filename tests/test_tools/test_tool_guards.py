# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""What the tools refuse, name and recover from: checkpoints that cannot be
read or leave weights unloaded, a random E2E learner, a damaged last
checkpoint on --resume, --tta and --show-dir on the shapes configs, and
tools/infer.py's inputs and outputs."""
import glob
import os
import os.path as osp
import re
import shutil
import subprocess
import sys

import cv2
import numpy as np

from tests.test_tools import test_train_test_tools as tools_tests

E2E_CONFIG, RES_CONFIG, ROOT = (tools_tests.E2E_CONFIG, tools_tests.RES_CONFIG,
                                tools_tests.ROOT)
mIoU, run, small_run_options = (tools_tests.mIoU, tools_tests.run,
                                tools_tests.small_run_options)
# the runs of test_train_test_tools: a trained E2E learner (resumed once)
# and a ResEnsemble on top of it
data_root = tools_tests.data_root
e2e_run = tools_tests.e2e_run
res_run = tools_tests.res_run


def run_failing(args):
    """Run a tool that must fail; its output."""
    proc = subprocess.run(
        args,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600)
    assert proc.returncode != 0, proc.stdout[-4000:]
    return proc.stdout


def resensemble_test_options(res_run):
    return [o for o in res_run[3] if not o.startswith('model.e2e_checkpoint')
            ] + ['model.e2e_checkpoint=None']


def test_test_tool_refuses_a_checkpoint_that_leaves_weights_unloaded(
        res_run, tmp_path):
    # the E2E learner's checkpoint instead of the ResEnsemble one
    e2e_ckpt = res_run[1]
    out = run_failing([
        sys.executable, 'tools/test.py', RES_CONFIG, e2e_ckpt, '--work-dir',
        str(tmp_path), '--cfg-options'
    ] + resensemble_test_options(res_run))
    assert f'checkpoint {e2e_ckpt!r} leaves' in out
    assert "weights unloaded (under ['decode_head', 'e2e']" in out
    assert not re.search(r'mIoU: [0-9.]+', out)  # nothing was tested


def test_test_tool_names_a_checkpoint_it_cannot_read(res_run, tmp_path):
    good = osp.join(res_run[0], 'iter_3.pth')
    with open(good, 'rb') as f:
        data = f.read()
    for name, content in (('truncated.pth', data[:len(data) // 2]),
                          ('empty.pth', b''), ('text.pth', b'e2e weights\n')):
        path = str(tmp_path / name)
        with open(path, 'wb') as f:
            f.write(content)
        out = run_failing([
            sys.executable, 'tools/test.py', RES_CONFIG, path, '--work-dir',
            str(tmp_path), '--cfg-options'
        ] + resensemble_test_options(res_run))
        assert f'checkpoint {path!r} could not be read' in out, out[-3000:]


def test_train_tool_refuses_a_random_e2e_learner(data_root, tmp_path):
    out = run_failing([
        sys.executable, 'tools/train.py', RES_CONFIG, '--work-dir',
        str(tmp_path), '--cfg-options'
    ] + small_run_options(data_root, 2, 2) + ['model.e2e_checkpoint=None'])
    assert "E2E learner's weights were never loaded" in out
    assert 'Iter(train)' not in out
    assert not glob.glob(str(tmp_path / '*.pth'))


def test_resume_falls_back_from_a_damaged_last_checkpoint(
        e2e_run, data_root, tmp_path):
    work_dir = str(tmp_path / 'work')
    shutil.copytree(e2e_run[0], work_dir)
    last = osp.join(work_dir, 'iter_6.pth')
    for name in ('iter_2.pth', 'iter_4.pth', 'iter_6.pth'):
        # the copies' order in time, as written
        os.utime(osp.join(work_dir, name), (int(name[5]), int(name[5])))
    with open(osp.join(work_dir, 'last_checkpoint'), 'w') as f:
        f.write(last)
    with open(last, 'rb') as f:
        data = f.read()
    with open(last, 'wb') as f:
        f.write(data[:len(data) // 2])
    out = run([
        sys.executable, 'tools/train.py', E2E_CONFIG, '--work-dir', work_dir,
        '--resume', '--cfg-options'
    ] + small_run_options(data_root, 8, 2))
    intact = osp.join(work_dir, 'iter_4.pth')
    assert f'the last checkpoint {last!r} is damaged' in out
    assert f'resuming from {intact!r}' in out
    assert 'Iter(train) [5/8]' in out and 'Iter(train) [4/8]' not in out


def test_tta_and_show_dir_on_the_shapes_config(res_run, data_root, tmp_path):
    ckpt = osp.join(res_run[0], 'iter_3.pth')
    show_dir = str(tmp_path / 'show')
    out = run([
        sys.executable, 'tools/test.py', RES_CONFIG, ckpt, '--tta',
        '--show-dir', show_dir, '--work-dir',
        str(tmp_path), '--cfg-options'
    ] + resensemble_test_options(res_run))
    assert 0 <= mIoU(out) <= 100
    pictures = glob.glob(osp.join(show_dir, '**', '*.png'), recursive=True)
    # one picture for every one of the 3 test images (MMSeg's interval of
    # 50 saved none)
    assert sorted(osp.basename(p) for p in pictures) == [
        f'test_0000{i}.png_0.png' for i in range(3)
    ]


def test_infer_tool_inputs_and_outputs(res_run, data_root, tmp_path):
    ckpt = osp.join(res_run[0], 'iter_3.pth')
    val = osp.join(data_root, 'img_dir', 'val')
    # writing the labels next to the images would replace 00000.png
    # (the image) by its label map: refused before anything is written
    image = str(tmp_path / 'in' / '00000.png')
    os.makedirs(osp.dirname(image))
    shutil.copy(osp.join(val, '00000.png'), image)
    before = open(image, 'rb').read()
    out = run_failing([
        sys.executable, 'tools/infer.py', RES_CONFIG, ckpt, image, '--out',
        osp.dirname(image)
    ])
    assert 'refusing to write over input images' in out and image in out
    assert open(image, 'rb').read() == before
    # a folder, two inputs that share a name, and an image too thin for
    # the test pipeline's Resize
    for folder in ('a', 'b'):
        os.makedirs(tmp_path / folder)
        shutil.copy(osp.join(val, '00001.png'), tmp_path / folder / 'x.png')
    thin = str(tmp_path / 'thin.png')
    cv2.imwrite(thin, np.zeros((3, 2000, 3), np.uint8))
    out_dir = str(tmp_path / 'out')
    out = run_failing([
        sys.executable, 'tools/infer.py', RES_CONFIG, ckpt, val,
        str(tmp_path / 'a' / 'x.png'),
        str(tmp_path / 'b' / 'x.png'), thin, '--out', out_dir, '--cfg-options',
        'model.test_cfg.num_steps=2'
    ])
    assert f'{thin}: ' in out and '1 of 6 images failed' in out
    written = sorted(os.listdir(out_dir))
    for name in ('00000', '00001', '00002', 'a_x', 'b_x'):
        for suffix in ('', '_e2e', '_vis'):
            assert f'{name}{suffix}.png' in written, written
    assert not any(n.startswith('thin') for n in written)
