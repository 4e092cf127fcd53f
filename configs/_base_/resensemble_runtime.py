# Runtime of every ResEnsemble config: MMSeg's default runtime, the plugin
# registered, and the reliability hooks (docs/reliability.md): checks
# before training (every training sample is read once through the train
# pipeline up to its CheckImageAndLabel: scan_files), a stop on a
# non-finite loss, and the random states saved in checkpoints so that
# --resume continues exactly.
_base_ = ['mmseg::_base_/default_runtime.py']
custom_imports = dict(
    imports=['mmseg_resensemble'], allow_failed_imports=False)
custom_hooks = [
    dict(type='ResEnsembleSanityCheckHook', scan_files=True),
    dict(type='NonFiniteLossHook'),
    dict(type='RandomStateHook'),
]
randomness = dict(seed=0)
