# Schedule of the diffusion learner of the small ResEnsemble configs: AdamW
# on the trainable parameters only (the frozen E2E learner is left out of
# the optimizer), gradients clipped, 1,000 iterations with PolyLR.
_base_ = ['./schedule_1k.py']
optim_wrapper = dict(
    constructor='TrainableParamsOptimWrapperConstructor',
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-3, weight_decay=1e-4),
    clip_grad=dict(_delete_=True, max_norm=1.0))
param_scheduler = [
    dict(
        type='PolyLR',
        eta_min=1e-5,
        power=0.9,
        begin=0,
        end=1000,
        by_epoch=False)
]
