# DRIVE retinal vessels in the img_dir/ann_dir layout: 2 classes
# (background, vessel), 565x584 images, 20 train / 20 test, labels 0/1
# with the same file name as the image. MMSeg's DRIVEDataset fits once
# its suffixes are set (it expects '<name>_manual1.png' labels by
# default). As MMSeg's drive config, the test split is used for
# validation and the whole image is scored (fov_dir's field-of-view masks
# are not applied). data_root is relative to the working directory, as in
# MMSeg: symlink the data (ln -s ../shared/data/drive data/drive) or pass
# --cfg-options train_dataloader.dataset.data_root=... (and the same for
# val_dataloader and test_dataloader).
dataset_type = 'DRIVEDataset'
data_root = 'data/drive'
# as MMSeg's drive config: (long, short) edge bounds, the images' own
# size, so Resize with keep_ratio leaves the images as they are
img_scale = (584, 565)
# MMSeg crops 64x64 for its UNet (stride 16, with a stride-1 decoder). A
# MobileNetV2-d8 learner would see 8x8 features there, smaller than its
# ASPP's dilations; 128x128 crops give 16x16 and keep CPU training cheap.
crop_size = (128, 128)
# CheckImageAndLabel (the plugin's): a wrong channel count, a label map of
# the wrong size or with values that are no class raise naming the file
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='CheckImageAndLabel', num_classes=2),
    dict(
        type='RandomResize',
        scale=img_scale,
        ratio_range=(0.5, 2.0),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    # add loading annotation after ``Resize`` because ground truth
    # does not need to do resize data transform
    dict(type='LoadAnnotations'),
    dict(type='CheckImageAndLabel', num_classes=2),
    dict(type='PackSegInputs')
]
img_ratios = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(
        type='TestTimeAug',
        transforms=[
            [
                dict(type='Resize', scale_factor=r, keep_ratio=True)
                for r in img_ratios
            ],
            [
                dict(type='RandomFlip', prob=0., direction='horizontal'),
                dict(type='RandomFlip', prob=1., direction='horizontal')
            ], [dict(type='LoadAnnotations')], [dict(type='PackSegInputs')]
        ])
]
# MMSeg wraps the 20 training images in a RepeatDataset; the
# InfiniteSampler cycles them anyway, and a flat dataset keeps the
# data_root override the same as for the other data sets.
train_dataloader = dict(
    batch_size=8,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        img_suffix='.png',
        seg_map_suffix='.png',
        data_prefix=dict(
            img_path='img_dir/train', seg_map_path='ann_dir/train'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        img_suffix='.png',
        seg_map_suffix='.png',
        data_prefix=dict(img_path='img_dir/test', seg_map_path='ann_dir/test'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU', 'mDice'])
test_evaluator = val_evaluator
