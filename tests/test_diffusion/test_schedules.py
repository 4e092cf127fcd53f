# Copyright (c) mmseg-resensemble contributors. All rights reserved.
import math

import numpy as np
import pytest

from mmseg_resensemble.diffusion import BETA_SCHEDULES, get_beta_schedule


def test_linear_golden_values():
    T = 1000
    betas = get_beta_schedule('linear', T)
    assert betas.dtype == np.float64
    assert betas.shape == (T, )
    assert betas[0] == pytest.approx(1e-4, abs=1e-18)  # beta_1
    assert betas[-1] == pytest.approx(2e-2, abs=1e-18)  # beta_T
    # Eq. 24 by hand at t = 500 (index 499).
    assert betas[499] == pytest.approx(
        (1e-4 * 500 + 2e-2 * 499) / 999, abs=1e-18)
    np.testing.assert_allclose(
        betas, np.linspace(1e-4, 2e-2, T), rtol=0, atol=1e-15)


def test_linear_alphas_cumprod_golden_values():
    T = 1000
    betas = get_beta_schedule('linear', T)
    alphas_cumprod = np.cumprod(1.0 - betas)
    for t in (1, 2, 10, 500, 1000):  # paper's 1-based t
        expected = math.prod(1.0 - (1e-4 * (T - s) + 2e-2 * (s - 1)) / (T - 1)
                             for s in range(1, t + 1))
        assert alphas_cumprod[t - 1] == pytest.approx(expected, rel=1e-12)
    # Known value of the DDPM linear schedule: alpha_bar_T ~= 4.04e-5.
    assert alphas_cumprod[-1] == pytest.approx(4.036e-5, rel=1e-3)


def test_linear_single_step_and_custom_range():
    np.testing.assert_array_equal(
        get_beta_schedule('linear', 1), np.array([1e-4]))
    betas = get_beta_schedule('linear', 3, beta_start=0.1, beta_end=0.3)
    np.testing.assert_allclose(betas, [0.1, 0.2, 0.3], rtol=0, atol=1e-15)
    betas = get_beta_schedule('linear', 4, beta_start=0.05, beta_end=0.05)
    np.testing.assert_allclose(betas, [0.05] * 4, rtol=0, atol=1e-15)


@pytest.mark.parametrize('T', [1, 10, 1000])
def test_cosine_schedule(T):
    betas = get_beta_schedule('cosine', T)
    assert betas.dtype == np.float64
    assert betas.shape == (T, )
    assert np.all(betas > 0) and np.all(betas <= 0.999)
    assert np.all(np.diff(betas) >= 0)
    alphas_cumprod = np.cumprod(1.0 - betas)
    assert np.all(np.diff(alphas_cumprod) < 0)
    assert alphas_cumprod[-1] < 1e-3 + 1e-12  # beta_T clipped to 0.999


def test_cosine_golden_value():
    T, s = 1000, 0.008

    def f(t):
        return math.cos((t / T + s) / (1 + s) * math.pi / 2)**2

    betas = get_beta_schedule('cosine', T)
    assert betas[0] == pytest.approx(1 - f(1) / f(0), rel=1e-12)
    assert betas[499] == pytest.approx(1 - f(500) / f(499), rel=1e-12)
    assert betas[-1] == 0.999  # clipped


def test_invalid_arguments():
    with pytest.raises(ValueError) as info:
        get_beta_schedule('quadratic', 10)
    msg = str(info.value)
    assert 'quadratic' in msg
    assert all(name in msg for name in BETA_SCHEDULES)
    with pytest.raises(ValueError, match='num_timesteps'):
        get_beta_schedule('linear', 0)
    with pytest.raises(ValueError, match='num_timesteps'):
        get_beta_schedule('linear', 2.5)
    with pytest.raises(ValueError, match='beta_start'):
        get_beta_schedule('linear', 10, beta_start=0.0)
    with pytest.raises(ValueError, match='beta_end'):
        get_beta_schedule('linear', 10, beta_end=1.0)
    with pytest.raises(ValueError, match='beta_start=0.5'):
        get_beta_schedule('linear', 10, beta_start=0.5, beta_end=0.1)
