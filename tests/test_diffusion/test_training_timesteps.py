# Copyright (c) mmseg-resensemble contributors. All rights reserved.
import pytest
import torch

from mmseg_resensemble.diffusion import GaussianDiffusion, TrainingTimesteps


def drawn(spec, sampler_steps=None, n=4000, T=10):
    torch.manual_seed(0)
    return set(
        TrainingTimesteps(spec, T, sampler_steps).draw(n, 'cpu').tolist())


def test_uniform_draws_every_step_of_algorithm_1():
    assert drawn('uniform') == set(range(10))


def test_sampler_draws_only_the_sampler_steps():
    d = GaussianDiffusion(num_timesteps=10)
    assert drawn('sampler', d.timesteps(1).tolist()) == {9}
    assert drawn('sampler', d.timesteps(2).tolist()) == {9, 4}


def test_a_range_is_one_based_and_inclusive():
    assert drawn((8, 10)) == {7, 8, 9}
    assert drawn([1, 1]) == {0}


def test_draws_follow_the_device_and_dtype():
    t = TrainingTimesteps('uniform', 10).draw(3, torch.device('cpu'))
    assert t.dtype == torch.long and t.shape == (3, )


@pytest.mark.parametrize(
    'spec',
    ['ddim', (0, 5), (5, 11), (6, 5), (1, 2, 3), 3, (1.0, 4), (True, 3), None])
def test_bad_specs_are_named(spec):
    with pytest.raises(ValueError, match='train_cfg.timesteps'):
        TrainingTimesteps(spec, 10, [9], prefix='train_cfg.')


def test_sampler_needs_the_steps():
    with pytest.raises(ValueError, match="'sampler' needs"):
        TrainingTimesteps('sampler', 10)
    with pytest.raises(ValueError, match='must lie in'):
        TrainingTimesteps('sampler', 10, [10])
