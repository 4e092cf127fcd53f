# Training schedule of the diffusion learner of the small ResEnsemble
# configs: AdamW on the trainable parameters only (the frozen E2E learner
# is left out of the optimizer), 1,000 iterations with PolyLR, atomic
# checkpoints, and the reliability hooks (docs/reliability.md).
optim_wrapper = dict(
    type='OptimWrapper',
    constructor='TrainableParamsOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=1e-4),
    clip_grad=dict(max_norm=1.0))
param_scheduler = [
    dict(
        type='PolyLR',
        eta_min=1e-5,
        power=0.9,
        begin=0,
        end=1000,
        by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=1000, val_interval=500)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # written atomically: a run killed mid-save can always resume
    checkpoint=dict(type='AtomicCheckpointHook', by_epoch=False, interval=500),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
# checks before training, stop on a non-finite loss, random states in
# checkpoints (exact --resume)
custom_hooks = [
    dict(type='ResEnsembleSanityCheckHook'),
    dict(type='NonFiniteLossHook'),
    dict(type='RandomStateHook'),
]
randomness = dict(seed=0)
