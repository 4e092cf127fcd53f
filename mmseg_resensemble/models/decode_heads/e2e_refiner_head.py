# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""A non-diffusion refiner of the E2E output, for ablations."""
from typing import Dict, List, Sequence

import torch
import torch.nn.functional as F
from mmseg.registry import MODELS
from mmseg.utils import ConfigType, SampleList
from torch import Tensor

from .residual_diffusion_head import ResidualDiffusionHead


@MODELS.register_module()
class E2ERefinerHead(ResidualDiffusionHead):
    """The same network as :class:`ResidualDiffusionHead`, trained
    deterministically with cross-entropy on top of x̂0.

    The ablation "(b) a non-diffusion refiner" of the benchmarks: same
    condition (frozen E2E features and x̂0), same blocks and training
    budget, but no noise, no steps and no ensemble: it predicts class
    logits once (the noisy-sample input is zeros and the step is 0), and
    the loss is the cross-entropy with the (area-averaged) one-hot ground
    truth over labelled pixels. ``test_cfg``'s sampler keys are ignored;
    ``uncertainty`` is zero.
    """

    def _logits(self, cond: Tensor, x_hat: Tensor) -> Tensor:
        zeros = torch.zeros_like(x_hat)
        steps = torch.zeros(
            x_hat.shape[0], dtype=torch.long, device=x_hat.device)
        return self.forward(cond, x_hat, zeros, steps)

    def loss(self, inputs: List[Tensor], e2e_probs: Tensor,
             batch_data_samples: SampleList,
             train_cfg: ConfigType) -> Dict[str, Tensor]:
        cond, x_hat, onehot, valid = self.training_maps(
            inputs, e2e_probs, batch_data_samples)
        log_probs = F.log_softmax(self._logits(cond, x_hat).float(), dim=1)
        per_pixel = -(onehot * log_probs).sum(1, keepdim=True)
        weight = valid.float()
        loss = (per_pixel * weight).sum() / weight.sum().clamp(min=1.)
        return dict(loss_ce=loss)

    def predict(self, inputs: List[Tensor], e2e_probs: Tensor,
                input_size: Sequence[int],
                test_cfg: ConfigType) -> Dict[str, Tensor]:
        cond = self.encode_condition(inputs, input_size)
        x_hat = self.encode_e2e(e2e_probs, cond.shape[-2:]).to(cond.dtype)
        probs = self._logits(cond, x_hat).float().softmax(dim=1)
        return dict(probs=probs, uncertainty=torch.zeros_like(probs[:, :1]))
