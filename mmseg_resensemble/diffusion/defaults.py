# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""The paper's settings, in one place.

Every default of the diffusion package, of the heads and of ``test_cfg``
comes from here: the diffusion of the ResEnsemble-DDPM paper (Shi, Dong
et al. 2023; T = 1000 steps, linear βt from 1e-4 to 2e-2 (Eq. 24), ε
prediction (Algorithm 1)) sampled with Algorithm 2 (ancestral DDPM over
all T steps, one sample, the ensemble ½(x̄0 + x̂0) of Eq. 15). The base
config ``configs/_base_/models/resensemble_residual-diffusion.py`` holds
the tuned values that differ, with the reason.
"""

#: keyword arguments of :class:`~.GaussianDiffusion`
DIFFUSION = dict(
    num_timesteps=1000,
    beta_schedule='linear',
    beta_start=1e-4,
    beta_end=2e-2,
    prediction_type='epsilon')

#: the sampling keys of ``test_cfg`` (Algorithm 2): ``num_steps=None`` runs
#: every step, ``start_step=None`` starts at T from pure noise,
#: ``clip_denoised=None`` clips as the sampler does by default (DDPM: no
#: clip, Algorithm 2 exactly; DDIM: clip), one sample per image drawn with
#: seed 0. Their meanings and their one check:
#: :func:`~.sampling_options.sampling_options`
SAMPLING = dict(
    sampler='ddpm',
    num_steps=None,
    eta=0.0,
    clip_denoised=None,
    start_step=None,
    num_samples=1,
    seed=0)

#: the training of Algorithm 1 (``train_cfg`` of the segmentor): t drawn
#: uniformly from 1..T (:class:`~.TrainingTimesteps`), x̄t always built
#: from the target (``self_aligned`` = 0: never from the network's own
#: first estimate)
TRAINING = dict(timesteps='uniform', self_aligned=0.0)
