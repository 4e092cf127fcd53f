# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""A non-diffusion refiner of the E2E output, for ablations."""
from typing import Dict, List, Optional, Sequence

import torch
from mmseg.registry import MODELS
from mmseg.utils import ConfigType, SampleList
from torch import Tensor

from .e2e_conditioned_head import E2EConditionedHead


@MODELS.register_module()
class E2ERefinerHead(E2EConditionedHead):
    """The same network as :class:`ResidualDiffusionHead`, trained
    deterministically with cross-entropy on top of x̂0.

    The ablation "(b) a non-diffusion refiner" of the benchmarks: same
    condition (frozen E2E features and x̂0), same denoiser and training
    budget, but no noise, no steps and no ensemble: it predicts class
    logits once (the noisy-sample input is zeros and the step is 0), and
    the loss (``loss_decode``, cross-entropy by default, or a list of MMSeg
    losses) is taken of the logits resized to the label maps, as MMSeg's
    decode heads do.
    ``test_cfg``'s sampler keys are ignored; ``uncertainty`` is zero.

    Args:
        loss_decode (dict | list[dict]): Defaults to MMSeg's
            ``CrossEntropyLoss``.
        diffusion (dict, optional): Ignored, as ``residual_target`` and
            ``prediction_type``: accepted so that a diffusion head's config
            becomes the refiner's by its ``type`` alone.
        **kwargs: :class:`E2EConditionedHead` arguments.
    """

    def __init__(self,
                 loss_decode: ConfigType = dict(
                     type='CrossEntropyLoss',
                     loss_name='loss_ce',
                     avg_non_ignore=True),
                 diffusion: Optional[dict] = None,
                 residual_target: Optional[bool] = None,
                 prediction_type: Optional[str] = None,
                 **kwargs) -> None:
        super().__init__(loss_decode=loss_decode, **kwargs)

    def _logits(self, cond: Tensor, x_hat: Tensor) -> Tensor:
        zeros = torch.zeros_like(x_hat)
        steps = torch.zeros(
            x_hat.shape[0], dtype=torch.long, device=x_hat.device)
        return self.forward(cond, x_hat, zeros, steps)

    def loss(self, inputs: List[Tensor], e2e_probs: Tensor,
             batch_data_samples: SampleList,
             train_cfg: ConfigType) -> Dict[str, Tensor]:
        """``loss_decode`` (one MMSeg loss or a list) of the logits against
        the label maps, as MMSeg's decode heads
        (:meth:`E2EConditionedHead.task_losses`)."""
        # the input size, the labels' (task_losses stacks them)
        size = batch_data_samples[0].gt_sem_seg.shape
        cond = self.encode_condition(inputs, size)
        x_hat = self.encode_e2e(e2e_probs, cond.shape[-2:])
        return self.task_losses(
            self._logits(cond, x_hat), batch_data_samples, self.loss_decode)

    def predict(self, inputs: List[Tensor], e2e_probs: Tensor,
                input_size: Sequence[int],
                test_cfg: ConfigType) -> Dict[str, Tensor]:
        """Class probabilities (N, K, h, w) and a zero ``uncertainty``."""
        cond = self.encode_condition(inputs, input_size)
        x_hat = self.encode_e2e(e2e_probs, cond.shape[-2:]).to(cond.dtype)
        probs = self._logits(cond, x_hat).float().softmax(dim=1)
        return dict(probs=probs, uncertainty=torch.zeros_like(probs[:, :1]))
