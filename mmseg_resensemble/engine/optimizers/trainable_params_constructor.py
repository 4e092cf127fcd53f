# Copyright (c) mmseg-resensemble contributors. All rights reserved.
from typing import List, Optional

import torch.nn as nn
from mmengine.optim import DefaultOptimWrapperConstructor
from mmseg.registry import OPTIM_WRAPPER_CONSTRUCTORS


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class TrainableParamsOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """Build the optimizer from the parameters that require gradients.

    MMEngine's default constructor hands every parameter to the optimizer,
    frozen ones included. With this constructor the frozen E2E learner of
    :class:`ResEnsembleSegmentor` is absent from the optimizer (and from
    its state dict); ``paramwise_cfg`` works as with the default one.

    Use it with ``optim_wrapper = dict(constructor=
    'TrainableParamsOptimWrapperConstructor', optimizer=..., ...)``.
    """

    def __init__(self,
                 optim_wrapper_cfg: dict,
                 paramwise_cfg: Optional[dict] = None) -> None:
        paramwise_cfg = dict(paramwise_cfg or {})
        # take the add_params path (the default one passes
        # model.parameters() unfiltered); bypass_duplicate=False is the
        # default value, so parameter groups are unchanged
        paramwise_cfg.setdefault('bypass_duplicate', False)
        super().__init__(optim_wrapper_cfg, paramwise_cfg)

    def add_params(self,
                   params: List[dict],
                   module: nn.Module,
                   prefix: str = '',
                   is_dcn_module: Optional[int] = None) -> None:
        super().add_params(params, module, prefix, is_dcn_module)
        params[:] = [g for g in params if g['params'][0].requires_grad]
