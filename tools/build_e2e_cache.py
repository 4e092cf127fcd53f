"""Build the E2E output cache of a config before training.

Runs the ``E2ECacheHook`` of the config's ``custom_hooks`` over the
training set, as training would in ``before_train``, and exits; a training
started afterwards finds the cache complete and reuses it. Multi-process
with the usual launchers, each rank computing its share::

    python tools/build_e2e_cache.py CONFIG
    torchrun --nproc_per_node=4 tools/build_e2e_cache.py CONFIG \\
        --launcher pytorch

``--e2e-cache-dir DIR`` builds it in another directory (then give the same
option to ``tools/train.py``).
"""
import argparse

from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.runner import Runner

from mmseg_resensemble.e2e_cache import build_e2e_cache, e2e_cache_hooks
from mmseg_resensemble.utils import (add_config_args, load_tool_config,
                                     prepare_distributed, shutdown_distributed)


def parse_args():
    parser = argparse.ArgumentParser(
        description='Build the E2E output cache of a training config')
    parser.add_argument('config', help='train config file path')
    add_config_args(parser, e2e_cache_dir=True)
    return parser.parse_args()


def cache_hook_cfg(cfg: Config) -> dict:
    """The config's ``E2ECacheHook`` entry of ``custom_hooks``."""
    hooks = e2e_cache_hooks(cfg)
    if len(hooks) != 1:
        raise ValueError(f'the config has {len(hooks)} E2ECacheHook in '
                         'custom_hooks; it needs exactly one')
    return hooks[0]


def main() -> dict:
    args = parse_args()
    cfg = load_tool_config(args)
    cache_hook_cfg(cfg)
    prepare_distributed(cfg)
    runner = Runner.from_cfg(cfg)
    stats = build_e2e_cache(runner)
    print_log(f'E2E cache built: {stats}', logger='current')
    del runner
    shutdown_distributed()
    return stats


if __name__ == '__main__':
    main()
