# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""Choose the ensemble weight of a trained ResEnsemble model on its
validation split.

The answer of ResEnsemble is w·x̄0 + (1 − w)·x̂0 (``test_cfg.
ensemble_weight``; the paper's Eq. 15 is w = ½, and w = 0 is the E2E learner
alone). This tool scores the model on the config's ``val_dataloader`` with
its ``val_evaluator`` once per weight, prints the table and the best weight,
and writes them to ``WORK_DIR/ensemble_weight.json``. Test with the weight
it found::

    python tools/tune_ensemble_weight.py CONFIG CHECKPOINT
    python tools/test.py CONFIG CHECKPOINT \\
        --cfg-options model.test_cfg.ensemble_weight=W

Because w = 0 is among the candidates, the chosen weight never scores below
the E2E learner on the validation split: a guard for data sets where the
head's residuals do not carry over. Runs with the launchers of
``tools/test.py`` (``--launcher pytorch|slurm``); each weight is one
distributed validation pass.
"""
import argparse
import json
import os
import os.path as osp

from mmengine.dist import is_main_process
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner

from mmseg_resensemble.utils import (add_config_args,
                                     check_checkpoint_covers_model,
                                     load_tool_config, prepare_distributed,
                                     read_checkpoint, shutdown_distributed)

DEFAULT_WEIGHTS = (0., 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='a ResEnsemble config file')
    parser.add_argument('checkpoint', help='its trained checkpoint')
    parser.add_argument(
        '--weights',
        type=float,
        nargs='+',
        default=list(DEFAULT_WEIGHTS),
        help='the candidate weights w in [0, 1] (default: 0, 0.1, ..., 1)')
    parser.add_argument(
        '--metric',
        default='mIoU',
        help="the val_evaluator's metric to maximise (default: mIoU)")
    add_config_args(parser, work_dir_help='where the JSON result goes')
    args = parser.parse_args()
    for w in args.weights:
        if not 0 <= w <= 1:
            parser.error(f'--weights: {w} is not in [0, 1]')
    return args


def main():
    args = parse_args()
    cfg = load_tool_config(args)
    if not cfg.get('val_dataloader') or not cfg.get('val_evaluator'):
        raise ValueError(f'{args.config} has no val_dataloader or '
                         'val_evaluator to choose the weight on')
    checkpoint = read_checkpoint(args.checkpoint)
    cfg.load_from = args.checkpoint
    # validation only: no training loop, optimizer or schedulers
    for key in ('train_dataloader', 'train_cfg', 'optim_wrapper',
                'param_scheduler'):
        cfg.pop(key, None)
    prepare_distributed(cfg)

    runner = Runner.from_cfg(cfg)
    check_checkpoint_covers_model(runner.model, checkpoint, args.checkpoint)
    del checkpoint
    model = runner.model.module if is_model_wrapper(
        runner.model) else runner.model
    if not hasattr(model, 'decode_head') or not getattr(
            model.decode_head, 'residual_target', False):
        raise TypeError(f'{args.config} is not a ResEnsemble model with a '
                        'residual target: it has no ensemble weight')
    rows = []
    for w in args.weights:
        model.test_cfg['ensemble_weight'] = float(w)
        metrics = runner.val()
        if args.metric not in metrics:
            raise KeyError(f'--metric {args.metric!r} is not among the '
                           f'val_evaluator\'s metrics {sorted(metrics)}')
        rows.append(
            dict(
                ensemble_weight=float(w),
                **{
                    k: float(v)
                    for k, v in metrics.items()
                }))
    best = max(rows, key=lambda r: r[args.metric])
    if is_main_process():
        print(f'\n{"ensemble_weight":>16s}{args.metric:>12s}')
        for row in rows:
            mark = '  <- best' if row is best else ''
            print(f'{row["ensemble_weight"]:16.2f}'
                  f'{row[args.metric]:12.2f}{mark}')
        print(f'\nbest: --cfg-options model.test_cfg.ensemble_weight='
              f'{best["ensemble_weight"]:g}')
        os.makedirs(cfg.work_dir, exist_ok=True)
        out = osp.join(cfg.work_dir, 'ensemble_weight.json')
        with open(out, 'w') as f:
            json.dump(
                dict(
                    config=osp.abspath(args.config),
                    checkpoint=osp.abspath(args.checkpoint),
                    metric=args.metric,
                    best=best['ensemble_weight'],
                    rows=rows),
                f,
                indent=2)
        print(f'written to {out}')
    del runner
    shutdown_distributed()


if __name__ == '__main__':
    main()
