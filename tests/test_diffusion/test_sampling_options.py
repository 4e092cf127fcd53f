# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""The one check of the sampling options and what their defaults mean."""
import pytest
import torch

from mmseg_resensemble.diffusion import (SAMPLERS, SAMPLING, GaussianDiffusion,
                                         sampler_timesteps, sampling_options)


def test_defaults_are_algorithm_2_and_resolve_the_clip_by_sampler():
    ddpm = sampling_options({}, 10)
    assert ddpm.sampler == SAMPLING['sampler'] == 'ddpm'
    assert ddpm.num_steps == 10 and ddpm.steps == tuple(range(9, -1, -1))
    # None: DDPM does not clip (Algorithm 2 exactly), DDIM does
    assert ddpm.clip_denoised is False
    ddim = sampling_options(dict(sampler='ddim', num_steps=2), 10)
    assert ddim.clip_denoised is True and ddim.steps == (9, 4)
    assert SAMPLERS['ddim'].clips_by_default
    assert not SAMPLERS['ddpm'].clips_by_default
    assert sampling_options(dict(sampler='ddim', clip_denoised=False),
                            10).clip_denoised is False
    # keys that are not sampling keys are left to their owners
    assert sampling_options(dict(mode='whole'), 10) == ddpm


def test_truncated_steps():
    opts = sampling_options(
        dict(sampler='ddim', num_steps=3, start_step=300), 1000)
    assert opts.steps == (299, 199, 99) and opts.start_step == 300
    assert sampling_options(dict(start_step=300), 1000).num_steps == 300
    assert sampler_timesteps(1, 1000) == [999]


@pytest.mark.parametrize('key,value,match', [
    ('sampler', 'euler', r"test_cfg\.sampler='euler' is not one of"),
    ('num_steps', 11, r'test_cfg\.num_steps .*\[1, 10\], got 11'),
    ('num_steps', 0, r'\[1, 10\], got 0'),
    ('num_steps', True, 'got True'),
    ('start_step', 0, r'test_cfg\.start_step .*\[1, 10\], got 0'),
    ('start_step', 11, r'\[1, 10\]'),
    ('eta', -0.1, r'test_cfg\.eta must be a number in \[0, 1\]'),
    ('eta', 1.5, r'\[0, 1\], got 1.5'),
    ('eta', True, 'got True'),
    ('clip_denoised', 2.0, r'test_cfg\.clip_denoised must be a bool or None'),
    ('num_samples', 0, r'test_cfg\.num_samples must be an int >= 1'),
    ('seed', 1.5, r'test_cfg\.seed must be an int or None, got 1.5'),
])
def test_each_key_is_checked_with_its_name(key, value, match):
    with pytest.raises(ValueError, match=match):
        sampling_options({key: value}, 10, prefix='test_cfg.')


def test_ddpm_runs_every_step():
    with pytest.raises(ValueError, match=r'runs all 300 steps'):
        sampling_options(dict(num_steps=100, start_step=300), 1000)


def test_the_diffusion_and_its_sampler_use_the_same_check():
    d = GaussianDiffusion(num_timesteps=10)
    assert d.sampling_options(dict(sampler='ddim', num_steps=4)).steps == \
        tuple(d.timesteps(4).tolist())
    with pytest.raises(ValueError, match=r'eta must be a number in \[0, 1\]'):
        d.sample(lambda x, t: x, (1, 1, 2, 2), sampler='ddim', eta=2.0)
    x = torch.zeros(1, 1, 2, 2)
    with pytest.raises(ValueError, match=r'eta must be a number in \[0, 1\]'):
        SAMPLERS['ddim'].step(d, x, 0, -1, x, eta=-1.0)
