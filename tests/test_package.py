# Copyright (c) mmseg-resensemble contributors. All rights reserved.
import subprocess
import sys

import torch


def test_import_registers_every_module():
    """`import mmseg_resensemble` alone (as custom_imports does) registers
    the plugin's modules in MMSeg's registries."""
    code = '''
import mmseg_resensemble
from mmseg.registry import (DATASETS, HOOKS, METRICS, MODELS,
                            OPTIM_WRAPPER_CONSTRUCTORS, TRANSFORMS)
expected = {
    MODELS: ['ResEnsembleSegmentor', 'ResidualDiffusionHead',
             'DiffusionTargetLoss', 'NoisePredictionLoss'],
    HOOKS: ['E2ECacheHook', 'RandomStateHook', 'NonFiniteLossHook',
            'ResEnsembleSanityCheckHook', 'AtomicCheckpointHook'],
    TRANSFORMS: ['LoadE2ECache', 'PackResEnsembleInputs',
                 'CheckImageAndLabel'],
    DATASETS: ['CamVidDataset', 'SyntheticShapesDataset'],
    METRICS: ['ResEnsembleIoUMetric'],
    OPTIM_WRAPPER_CONSTRUCTORS: ['TrainableParamsOptimWrapperConstructor'],
}
missing = [name for registry, names in expected.items() for name in names
           if registry.get(name) is None]
assert not missing, missing
print('ok')
'''
    out = subprocess.run([sys.executable, '-c', code],
                         capture_output=True,
                         text=True)
    assert out.returncode == 0 and 'ok' in out.stdout, out.stderr[-2000:]


def test_safe_globals_are_registered():
    from mmengine.logging.history_buffer import HistoryBuffer

    import mmseg_resensemble  # noqa: F401
    assert HistoryBuffer in torch.serialization.get_safe_globals()
