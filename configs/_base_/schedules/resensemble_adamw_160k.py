# The ResEnsemble schedule for a GPU cluster: 160k iterations, a linear
# warm-up over the first 1,500, then PolyLR.
_base_ = ['./resensemble_adamw_80k.py']
param_scheduler = [
    dict(
        type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=1500),
    dict(
        type='PolyLR',
        eta_min=1e-6,
        power=0.9,
        begin=1500,
        end=160000,
        by_epoch=False)
]
train_cfg = dict(max_iters=160000, val_interval=16000)
default_hooks = dict(checkpoint=dict(interval=16000))
