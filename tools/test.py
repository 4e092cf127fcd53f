# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""Test (and evaluate) a segmentor: MMSegmentation's ``tools/test.py``.

Same arguments and behaviour as MMSeg 1.x's tool, with the plugin imported
so that its modules are registered and torch >= 2.6 loads mmengine's
checkpoints. Unlike MMSeg's, it raises when the checkpoint cannot be read
(naming it) or leaves weights of the model unloaded (listing them), and
``--show-dir`` saves the picture of every test image.
"""
import argparse

from mmengine.runner import Runner

from mmseg_resensemble.utils import (add_config_args,
                                     check_checkpoint_covers_model,
                                     load_tool_config, prepare_distributed,
                                     read_checkpoint, shutdown_distributed)


def parse_args():
    parser = argparse.ArgumentParser(
        description='MMSeg test (and eval) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--out',
        type=str,
        help='The directory to save output prediction for offline evaluation')
    parser.add_argument(
        '--show', action='store_true', help='show prediction results')
    parser.add_argument(
        '--show-dir',
        help='directory where painted images will be saved. '
        'If specified, it will be automatically saved '
        'to the work_dir/timestamp/show_dir')
    parser.add_argument(
        '--wait-time', type=float, default=2, help='the interval of show (s)')
    parser.add_argument(
        '--tta', action='store_true', help='Test time augmentation')
    add_config_args(
        parser,
        work_dir_help='if specified, the evaluation metric results will be '
        'dumped into the directory as json')
    return parser.parse_args()


def trigger_visualization_hook(cfg, args):
    default_hooks = cfg.default_hooks
    if 'visualization' in default_hooks:
        visualization_hook = default_hooks['visualization']
        # Turn on visualization
        visualization_hook['draw'] = True
        # every test image, not every 50th
        visualization_hook['interval'] = 1
        if args.show:
            visualization_hook['show'] = True
            visualization_hook['wait_time'] = args.wait_time
        if args.show_dir:
            visualizer = cfg.visualizer
            visualizer['save_dir'] = args.show_dir
    else:
        raise RuntimeError(
            'VisualizationHook must be included in default_hooks.'
            'refer to usage '
            '"visualization=dict(type=\'VisualizationHook\')"')
    return cfg


def main():
    args = parse_args()

    cfg = load_tool_config(args)

    # fail here, naming the file, rather than deep in the runner
    checkpoint = read_checkpoint(args.checkpoint)
    cfg.load_from = args.checkpoint

    if args.show or args.show_dir:
        cfg = trigger_visualization_hook(cfg, args)

    if args.tta:
        if 'tta_pipeline' not in cfg or 'tta_model' not in cfg:
            raise ValueError(
                f'--tta: {args.config} has no tta_pipeline and tta_model '
                "(see MMSeg's configs/_base_/datasets/*.py)")
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
        cfg.tta_model.module = cfg.model
        cfg.model = cfg.tta_model

    # add output_dir in metric
    if args.out is not None:
        cfg.test_evaluator['output_dir'] = args.out
        cfg.test_evaluator['keep_results'] = True

    prepare_distributed(cfg)

    runner = Runner.from_cfg(cfg)
    check_checkpoint_covers_model(runner.model, checkpoint, args.checkpoint)
    del checkpoint
    runner.test()
    # the DDP wrapper holds the process group: drop it first
    del runner
    shutdown_distributed()


if __name__ == '__main__':
    main()
