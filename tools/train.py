# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""Train a segmentor: MMSegmentation's ``tools/train.py`` with the plugin.

Same arguments and behaviour as MMSeg 1.x's tool. Importing
``mmseg_resensemble`` registers the plugin's modules and lets torch >= 2.6
load mmengine's checkpoints (``--resume``, ``load_from``). ``--resume``
with a damaged last checkpoint resumes from the newest intact one in the
work dir, saying so. A config with an ``E2ECacheHook`` gets its E2E cache
built (or checked) before the data workers start; ``--e2e-cache-dir``
points the hook and the pipeline's ``LoadE2ECache`` at another directory.
"""
import argparse
import logging

from mmengine.logging import print_log
from mmengine.runner import Runner
from mmseg.registry import RUNNERS

from mmseg_resensemble.e2e_cache import build_e2e_cache
from mmseg_resensemble.utils import (add_config_args,
                                     find_resumable_checkpoint,
                                     load_tool_config, prepare_distributed,
                                     shutdown_distributed)


def parse_args():
    parser = argparse.ArgumentParser(description='Train a segmentor')
    parser.add_argument('config', help='train config file path')
    parser.add_argument(
        '--resume',
        action='store_true',
        default=False,
        help='resume from the latest checkpoint in the work_dir automatically')
    parser.add_argument(
        '--amp',
        action='store_true',
        default=False,
        help='enable automatic-mixed-precision training')
    add_config_args(parser, e2e_cache_dir=True)
    return parser.parse_args()


def main():
    args = parse_args()

    cfg = load_tool_config(args)

    # enable automatic-mixed-precision training
    if args.amp is True:
        optim_wrapper = cfg.optim_wrapper.type
        if optim_wrapper == 'AmpOptimWrapper':
            print_log(
                'AMP training is already enabled in your config.',
                logger='current',
                level=logging.WARNING)
        else:
            assert optim_wrapper == 'OptimWrapper', (
                '`--amp` is only supported when the optimizer wrapper type is '
                f'`OptimWrapper` but got {optim_wrapper}.')
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'

    cfg.resume = args.resume
    if args.resume and cfg.get('load_from') is None:
        # None (a fresh start) without a last_checkpoint, as in mmengine
        cfg.load_from = find_resumable_checkpoint(cfg.work_dir)
    # gloo and CPU DDP when the machine has no GPU
    prepare_distributed(cfg)

    if 'runner_type' not in cfg:
        runner = Runner.from_cfg(cfg)
    else:
        runner = RUNNERS.build(cfg)

    # the E2E cache complete before the training data workers start
    build_e2e_cache(runner)
    runner.train()
    # the DDP wrapper holds the process group: drop it first
    del runner
    shutdown_distributed()


if __name__ == '__main__':
    main()
