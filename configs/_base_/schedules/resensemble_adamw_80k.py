# The ResEnsemble schedule for a GPU cluster: 80k iterations, a linear
# warm-up over the first 1,000, then PolyLR.
_base_ = ['./resensemble_adamw_1k.py']
optim_wrapper = dict(optimizer=dict(lr=2e-4))
param_scheduler = [
    dict(
        type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=1000),
    dict(
        type='PolyLR',
        eta_min=1e-6,
        power=0.9,
        begin=1000,
        end=80000,
        by_epoch=False)
]
train_cfg = dict(max_iters=80000, val_interval=8000)
default_hooks = dict(checkpoint=dict(interval=8000))
