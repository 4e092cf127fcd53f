# ResEnsemble on the demo's E2E learner, trained from the E2E output cache:
# E2ECacheHook runs the frozen E2E learner once over the training images
# before training; LoadE2ECache then reads x̂0 and lets the augmentations
# move it with the ground truth.
_base_ = ['./resensemble_fcn-m-v2-d8_1xb8-2k_shapes-96x128.py']
# one directory for the hook that builds the cache and the transform that
# reads it, shared by the runs on this E2E learner (tools/train.py
# --e2e-cache-dir DIR points both elsewhere)
e2e_cache_dir = 'work_dirs/e2e_cache/fcn_m-v2-d8_1xb8-1k_shapes-96x128'
custom_hooks = [
    dict(type='ResEnsembleSanityCheckHook', scan_files=True),
    dict(type='E2ECacheHook', cache_dir=e2e_cache_dir),
    dict(type='NonFiniteLossHook'),
    dict(type='RandomStateHook'),
]
crop_size = (96, 128)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='CheckImageAndLabel', num_classes=5),
    dict(type='LoadE2ECache', cache_dir=e2e_cache_dir),
    dict(
        type='RandomResize',
        scale=(128, 96),
        ratio_range=(0.75, 1.5),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.9),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackResEnsembleInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
