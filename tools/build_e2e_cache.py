"""Build the E2E output cache of a config before training.

Runs the ``E2ECacheHook`` of the config's ``custom_hooks`` over the
training set, as training would in ``before_train``, and exits; a training
started afterwards finds the cache complete and reuses it. Multi-process
with the usual launchers, each rank computing its share::

    python tools/build_e2e_cache.py CONFIG
    torchrun --nproc_per_node=4 tools/build_e2e_cache.py CONFIG \\
        --launcher pytorch
"""
import argparse
import os
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.logging import print_log
from mmengine.runner import Runner
from mmseg.registry import HOOKS
from mmseg.utils import register_all_modules

from mmseg_resensemble.engine import E2ECacheHook
from mmseg_resensemble.utils import prepare_distributed, shutdown_distributed


def parse_args():
    parser = argparse.ArgumentParser(
        description='Build the E2E output cache of a training config')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override some settings in the used config (key=value)')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def cache_hook_cfg(cfg: Config) -> dict:
    """The config's ``E2ECacheHook`` entry of ``custom_hooks``."""
    hooks = [
        h for h in cfg.get('custom_hooks') or []
        if h.get('type') in ('E2ECacheHook', E2ECacheHook)
    ]
    if len(hooks) != 1:
        raise ValueError(f'the config has {len(hooks)} E2ECacheHook in '
                         'custom_hooks; it needs exactly one')
    return hooks[0]


def main() -> dict:
    args = parse_args()
    register_all_modules(init_default_scope=True)
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    hook = HOOKS.build(cache_hook_cfg(cfg))
    prepare_distributed(cfg)
    runner = Runner.from_cfg(cfg)
    dataset = Runner.build_dataloader(cfg.train_dataloader).dataset
    stats = hook.build_cache(runner, dataset)
    print_log(f'E2E cache built: {stats}', logger='current')
    del runner
    shutdown_distributed()
    return stats


if __name__ == '__main__':
    main()
