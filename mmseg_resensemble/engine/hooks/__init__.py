# Copyright (c) mmseg-resensemble contributors. All rights reserved.
from .atomic_checkpoint_hook import AtomicCheckpointHook, AtomicLocalBackend
from .e2e_cache_hook import E2ECacheHook, build_e2e_cache
from .ensemble_weight_hook import EnsembleWeightHook, ensemble_weight_scores
from .non_finite_loss_hook import NonFiniteLossHook
from .random_state_hook import RandomStateHook
from .sanity_check_hook import ResEnsembleSanityCheckHook

__all__ = [
    'AtomicCheckpointHook', 'AtomicLocalBackend', 'E2ECacheHook',
    'EnsembleWeightHook', 'ensemble_weight_scores', 'NonFiniteLossHook',
    'RandomStateHook', 'ResEnsembleSanityCheckHook', 'build_e2e_cache'
]
