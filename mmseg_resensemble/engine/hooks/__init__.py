# Copyright (c) mmseg-resensemble contributors. All rights reserved.
from .atomic_checkpoint_hook import AtomicCheckpointHook, AtomicLocalBackend
from .ensemble_weight_hook import EnsembleWeightHook, ensemble_weight_scores
from .non_finite_loss_hook import NonFiniteLossHook
from .random_state_hook import RandomStateHook
from .sanity_check_hook import ResEnsembleSanityCheckHook

__all__ = [
    'AtomicCheckpointHook', 'AtomicLocalBackend', 'EnsembleWeightHook',
    'ensemble_weight_scores', 'NonFiniteLossHook', 'RandomStateHook',
    'ResEnsembleSanityCheckHook'
]
