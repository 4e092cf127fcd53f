# ResEnsemble-DDPM: a frozen E2E learner and a ResidualDiffusionHead that
# generates x̄0 = 2·x0 − x̂0 from the E2E learner's features and x̂0; the
# answer is ½(x̄0 + x̂0). A config on top sets the E2E learner (`e2e`,
# `e2e_checkpoint`) and `num_classes`; the features the head reads are
# measured on the E2E learner at build time (in_channels='auto': the
# highest- and the lowest-resolution feature levels; set `in_index` to
# choose others, or `in_channels` too to give them by hand).
#
# Keys left out take the paper's values
# (mmseg_resensemble/diffusion/defaults.py: T = 1000, linear β from 1e-4 to
# 2e-2, ε prediction, DDPM over all T steps); the values set here are the
# tuned ones, each with its reason.
model = dict(
    type='ResEnsembleSegmentor',
    decode_head=dict(
        type='ResidualDiffusionHead',
        in_channels='auto',
        in_index=None,
        input_transform='resize_concat',
        # 128 channels, not 64: +3.9 mIoU on CamVid over 3 seeds, +0.2 on
        # DRIVE (docs/benchmarks.md, section 2b)
        channels=128,
        # εθ: swap it by its type (any registered denoiser). Dense blocks:
        # block_type='separable' costs a quarter of the multiply-adds but
        # scored 1.15 mIoU lower on CamVid (2 seeds) and 0.24 on DRIVE
        # (1 seed) (docs/benchmarks.md, section 8)
        denoiser=dict(
            type='DilatedResDenoiser',
            num_blocks=4,
            dilations=(1, 2, 4, 1),
            block_type='dense'),
        scale=1.0,
        # the resolution of the E2E decoders of the zoo (DeepLabV3+,
        # SegFormer, UPerNet)
        working_stride=4,
        # εθ predicts x̄0 itself ('sample'), not the paper's noise: the
        # best of the three parameterisations measured in docs/benchmarks.md
        diffusion=dict(prediction_type='sample'),
        align_corners=False),
    # one DDIM step instead of the paper's 1000 DDPM steps: the best
    # setting measured in docs/benchmarks.md, and the cheapest. Without
    # `mode` the E2E config's test mode is used (whole, or slide with its
    # crop_size and stride), so that e2e_mIoU is the E2E learner's own
    test_cfg=dict(sampler='ddim', num_steps=1, num_samples=1, seed=0))
