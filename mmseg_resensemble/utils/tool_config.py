# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""The arguments and the config loading the tools share (MMSeg's
``tools/train.py`` and ``tools/test.py`` conventions)."""
import argparse
import os
import os.path as osp

from mmengine.config import Config, DictAction

__all__ = ['add_config_args', 'load_tool_config']


def add_config_args(parser: argparse.ArgumentParser,
                    work_dir_help: str = 'the dir to save logs and models',
                    e2e_cache_dir: bool = False) -> argparse.ArgumentParser:
    """Add ``--work-dir``, ``--cfg-options``, ``--launcher`` and
    ``--local-rank`` (and ``--e2e-cache-dir``) as MMSeg's tools have them.

    Args:
        parser (ArgumentParser): The tool's parser, with its ``config``.
        work_dir_help (str): Help of ``--work-dir``.
        e2e_cache_dir (bool): Add ``--e2e-cache-dir`` too.

    Returns:
        ArgumentParser: ``parser``.
    """
    parser.add_argument('--work-dir', help=work_dir_help)
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override some settings in the used config, the key-value pair '
        'in xxx=yyy format will be merged into config file. If the value to '
        'be overwritten is a list, it should be like key="[a,b]" or key=a,b '
        'It also allows nested list/tuple values, e.g. key="[(a,b),(c,d)]" '
        'Note that the quotation marks are necessary and that no white space '
        'is allowed.')
    if e2e_cache_dir:
        parser.add_argument(
            '--e2e-cache-dir',
            help="the E2E cache directory, given to the config's "
            'E2ECacheHook and to every LoadE2ECache of its training set')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    return parser


def load_tool_config(args: argparse.Namespace) -> Config:
    """The config of ``args.config`` as the tools use it: MMSeg's modules
    registered (default scope ``mmseg``), ``--cfg-options`` merged,
    ``launcher`` and ``work_dir`` set (default ``./work_dirs/<config
    name>``), ``--e2e-cache-dir`` applied; ``LOCAL_RANK`` set from
    ``--local-rank`` unless a launcher set it."""
    from mmseg.utils import register_all_modules

    from ..e2e_cache.cache_dir import set_e2e_cache_dir
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    register_all_modules(init_default_scope=True)
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if getattr(args, 'e2e_cache_dir', None) is not None:
        set_e2e_cache_dir(cfg, args.e2e_cache_dir)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    return cfg
