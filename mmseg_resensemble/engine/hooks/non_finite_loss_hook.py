# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""Stop training at the first non-finite loss, naming the iteration."""
import math
from typing import Any, Dict, List, Optional

import torch
from mmengine.dist import all_reduce, get_dist_info
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.runner import EpochBasedTrainLoop
from mmseg.registry import HOOKS

__all__ = ['NonFiniteLossHook']


def _as_float(value: Any) -> Optional[float]:
    """A logged scalar as a float; None for what is not a number."""
    if isinstance(value, torch.Tensor):
        value = value.detach().float().flatten()
        if value.numel() == 0:
            return None
        bad = value[~torch.isfinite(value)]
        return (bad[0] if bad.numel() else value[0]).item()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Raise ``FloatingPointError`` when a training loss is NaN or infinite.

    After every training iteration (``interval`` 1 by default) the losses
    that the model logged (``outputs`` of ``train_step``: ``loss`` and
    each ``*.loss_*`` entry) are checked; optionally the trainable
    parameters too (``check_params``: a finite loss can come with
    non-finite gradients, which poison the weights silently). The error
    names the iteration (1-based, as the log's ``Iter(train) [i/N]`` and
    ``iter_i.pth``) and every non-finite key with its value, so training
    stops instead of running on NaN weights. The hook runs before the
    ``CheckpointHook`` (priority ``ABOVE_NORMAL``), so the poisoned
    weights of that iteration are never saved: the last checkpoint is the
    last good one, to resume from with a lower learning rate, gradient
    clipping or AMP's loss scaling.

    In a distributed run the ranks agree (one ``all_reduce`` of a flag per
    checked iteration) and all raise at the same iteration, instead of one
    rank stopping and the others waiting for it in the next collective.

    Mixed precision: ``AmpOptimWrapper`` skips the optimizer step when the
    gradients overflow, but a non-finite *loss* (from an fp16 forward
    overflow) is still raised; set ``max_consecutive`` > 1 to tolerate
    isolated ones there.

    Args:
        interval (int): Check every ``interval`` iterations. Defaults to 1.
        check_params (bool): Also check every trainable parameter. Defaults
            to False.
        max_consecutive (int): Raise when this many consecutive checked
            iterations are non-finite. Defaults to 1 (the first).
    """

    priority = 'ABOVE_NORMAL'

    def __init__(self,
                 interval: int = 1,
                 check_params: bool = False,
                 max_consecutive: int = 1) -> None:
        if not isinstance(interval, int) or interval < 1:
            raise ValueError(f'interval must be an int >= 1, got {interval!r}')
        if not isinstance(max_consecutive, int) or max_consecutive < 1:
            raise ValueError('max_consecutive must be an int >= 1, got '
                             f'{max_consecutive!r}')
        self.interval = interval
        self.check_params = check_params
        self.max_consecutive = max_consecutive
        self._consecutive = 0

    @staticmethod
    def non_finite_losses(outputs: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        """The entries of ``outputs`` that are losses and are not finite.

        Args:
            outputs (dict, optional): What ``train_step`` returned.

        Returns:
            dict[str, float]: Key -> value, in ``outputs``' order.
        """
        bad = {}
        for key, value in (outputs or {}).items():
            if not (key == 'loss' or 'loss' in key.split('.')[-1]):
                continue
            number = _as_float(value)
            if number is not None and not math.isfinite(number):
                bad[key] = number
        return bad

    @staticmethod
    def non_finite_params(model: torch.nn.Module) -> List[str]:
        """Names of the trainable parameters with a NaN or infinite entry."""
        if is_model_wrapper(model):
            model = model.module
        return [
            name for name, p in model.named_parameters()
            if p.requires_grad and not torch.isfinite(p).all()
        ]

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch: Any = None,
                         outputs: Optional[dict] = None) -> None:
        """Check the iteration's losses (and parameters); raise if bad."""
        if not self.every_n_train_iters(runner, self.interval):
            return
        bad_losses = self.non_finite_losses(outputs)
        bad_params = (
            self.non_finite_params(runner.model) if self.check_params else [])
        flag = torch.tensor([1. if (bad_losses or bad_params) else 0.])
        # summed over the ranks (a no-op in a single process)
        all_reduce(flag, op='sum')
        rank, _ = get_dist_info()
        if flag.item() == 0:
            self._consecutive = 0
            return
        self._consecutive += 1
        if self._consecutive < self.max_consecutive:
            runner.logger.warning(
                f'non-finite training state at iteration {runner.iter + 1} '
                f'({self._describe(bad_losses, bad_params, rank)}), '
                f'{self._consecutive} of max_consecutive='
                f'{self.max_consecutive} in a row')
            return
        what = self._describe(bad_losses, bad_params, rank)
        last = runner.message_hub.get_info('last_ckpt')
        where = f'iteration {runner.iter + 1}'
        if isinstance(runner.train_loop, EpochBasedTrainLoop):
            where += f' (epoch {runner.epoch + 1})'
        raise FloatingPointError(
            f'non-finite training state at {where}: {what}. '
            'Training stopped before '
            'this iteration is checkpointed' +
            (f'; the last checkpoint is {last}' if last else '') +
            '. Resume from it with a lower learning rate, gradient clipping '
            '(optim_wrapper.clip_grad) or AMP loss scaling.')

    @staticmethod
    def _describe(bad_losses: Dict[str, float], bad_params: List[str],
                  rank: int) -> str:
        parts = []
        if bad_losses:
            parts.append('losses ' + ', '.join(f'{k}={v}'
                                               for k, v in bad_losses.items()))
        if bad_params:
            shown = ', '.join(bad_params[:5])
            more = (f' and {len(bad_params) - 5} more'
                    if len(bad_params) > 5 else '')
            parts.append(f'parameters {shown}{more}')
        if not parts:
            return 'on another rank (this rank is finite)'
        prefix = f'rank {rank}: ' if get_dist_info()[1] > 1 else ''
        return prefix + '; '.join(parts)
