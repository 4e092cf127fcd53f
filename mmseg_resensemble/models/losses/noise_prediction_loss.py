# Copyright (c) mmseg-resensemble contributors. All rights reserved.
from typing import Optional

import torch.nn as nn
from mmseg.models.losses import weight_reduce_loss
from mmseg.registry import MODELS
from torch import Tensor


@MODELS.register_module()
class NoisePredictionLoss(nn.Module):
    """The ε-prediction loss ‖ε − εθ(x̄t, I0, t)‖² (Algorithm 1).

    Mean squared error over channels and valid pixels; pixels whose weight
    is 0 (ignored labels, padding) add nothing. With the head's other
    ``prediction_type``s the target is x̄0 ('sample') or v, the same MSE.

    Args:
        loss_weight (float): Weight of the loss. Defaults to 1.0.
        loss_name (str): Name in the log; must start with ``loss_`` to be
            back-propagated. Defaults to 'loss_noise'.
    """

    def __init__(self,
                 loss_weight: float = 1.0,
                 loss_name: str = 'loss_noise') -> None:
        super().__init__()
        if not loss_name.startswith('loss_'):
            raise ValueError(
                f'loss_name must start with "loss_", got {loss_name!r}')
        self.loss_weight = loss_weight
        self._loss_name = loss_name

    def forward(self,
                pred: Tensor,
                target: Tensor,
                weight: Optional[Tensor] = None) -> Tensor:
        """Compute the loss.

        Args:
            pred (Tensor): Predicted noise of shape (N, K, h, w).
            target (Tensor): True noise of shape (N, K, h, w).
            weight (Tensor, optional): Pixel weights of shape (N, 1, h, w).

        Returns:
            Tensor: Scalar loss.
        """
        assert pred.shape == target.shape, (pred.shape, target.shape)
        err = (pred.float() - target.float())**2
        if weight is None:
            return self.loss_weight * err.mean()
        weight = weight.float().expand_as(err)
        return self.loss_weight * weight_reduce_loss(
            err, weight, avg_factor=weight.sum().clamp(min=1.))

    @property
    def loss_name(self) -> str:
        return self._loss_name
