# Copyright (c) mmseg-resensemble contributors. All rights reserved.
import math

import pytest
import torch

from mmseg_resensemble.diffusion import SAMPLERS, GaussianDiffusion
from mmseg_resensemble.diffusion.gaussian_diffusion import _extract_into_tensor
from mmseg_resensemble.diffusion.samplers import DDIMSampler, DDPMSampler

SHAPE = (2, 3, 4, 4)


def make_oracle(d, x0):
    """eps_fn that returns the true noise of x_t w.r.t. a known x0."""

    def eps_fn(x_t, t):
        assert t.dtype == torch.long and t.shape == (x_t.shape[0], )
        a = d.alphas_cumprod.to(x_t.dtype)[t].view(-1, 1, 1, 1)
        return (x_t - a.sqrt() * x0) / (1 - a).sqrt()

    return eps_fn


def linear_eps_fn(x_t, t):
    # Deterministic, t-dependent stand-in for a network.
    return 0.5 * x_t + 0.01 * t.to(x_t.dtype).view(-1, 1, 1, 1)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def ddpm_step(d, eps, t, x_t, noise=None):
    """x_{t-1} of one DDPM step on the noise ``eps``."""
    return DDPMSampler().step(d, eps, t, t - 1, x_t, noise=noise).prev_sample


def ddim_step(d, eps, t, t_prev, x_t, eta=0.0, noise=None):
    """x_{t_prev} of one DDIM step on the noise ``eps``."""
    return DDIMSampler().step(
        d, eps, t, t_prev, x_t, eta=eta, noise=noise).prev_sample


def test_schedule_attributes():
    d = GaussianDiffusion(num_timesteps=10, beta_schedule='linear')
    assert d.num_timesteps == 10
    for name in ('betas', 'alphas_cumprod', 'alphas_cumprod_prev',
                 'posterior_variance', 'sqrt_alphas_cumprod',
                 'sqrt_one_minus_alphas_cumprod'):
        arr = getattr(d, name)
        assert arr.dtype == torch.float64 and arr.shape == (10, )
        assert arr.device.type == 'cpu'
    torch.testing.assert_close(
        d.betas, torch.linspace(1e-4, 2e-2, 10, dtype=torch.float64))
    torch.testing.assert_close(d.alphas_cumprod, torch.cumprod(1 - d.betas, 0))
    assert d.alphas_cumprod_prev[0] == 1.0
    assert d.posterior_variance[0] == 0.0
    # Eq. 22-23 at t = 5 (index 4), by hand.
    a = d.alphas_cumprod
    expected = (1 - a[3]) / (1 - a[4]) * d.betas[4]
    assert d.posterior_variance[4].item() == pytest.approx(expected.item())
    cos = GaussianDiffusion(num_timesteps=10, beta_schedule='cosine')
    assert cos.alphas_cumprod[-1] < 1e-3 + 1e-12


def test_schedule_follows_the_device_and_stays_float64():
    """The schedule is in neither the state dict nor the buffers (DDP would
    broadcast them) and stays float64 when the model is cast; a gather on a
    device uses one copy made there (no host-side gather)."""
    d = GaussianDiffusion(num_timesteps=10, check_args=False)
    assert dict(d.state_dict()) == {} and list(d.buffers()) == []
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), d).half()
    assert model[0].weight.dtype == torch.float16
    assert d.betas.dtype == torch.float64
    devices = ['meta'] + (['cuda'] if torch.cuda.is_available() else [])
    for device in devices:
        copy = d.schedule_on(d.alphas_cumprod, device)
        assert copy.device.type == device and copy.dtype == torch.float64
        assert d.schedule_on(d.alphas_cumprod, device) is copy
        x = torch.zeros(2, 1, 2, 2, device=device)
        t = torch.tensor([0, 9], device=device)
        assert d.q_sample(x, t, x).device.type == device
    assert d.schedule_on(d.betas, 'cpu') is d.betas


def test_extract_into_tensor():
    arr = torch.arange(5, dtype=torch.float64) / 3
    t = torch.tensor([4, 1])
    out = _extract_into_tensor(
        arr, t, (2, 3, 2, 2), dtype=torch.float32, device='cpu')
    assert out.shape == (2, 3, 2, 2) and out.dtype == torch.float32
    assert torch.all(out[0] == torch.tensor(4 / 3, dtype=torch.float32))
    assert torch.all(out[1] == torch.tensor(1 / 3, dtype=torch.float32))


def test_q_sample_exact_formula():
    d = GaussianDiffusion(num_timesteps=1000)
    x0 = torch.randn(SHAPE, generator=gen(1), dtype=torch.float64)
    noise = torch.randn(SHAPE, generator=gen(2), dtype=torch.float64)
    t = torch.tensor([0, 999])
    x_t = d.q_sample(x0, t, noise)
    assert x_t.shape == x0.shape and x_t.dtype == x0.dtype
    for i, step in enumerate(t.tolist()):
        a_bar = math.prod(1 - b for b in d.betas[:step + 1].tolist())
        expected = math.sqrt(a_bar) * x0[i] + math.sqrt(1 - a_bar) * noise[i]
        torch.testing.assert_close(x_t[i], expected)
    # alpha_bar_t (Eq. 5), not alpha_t (typo of Eq. 17): x_T is ~pure noise.
    assert (x_t[1] - noise[1]).abs().max() < 0.02
    # dtype is preserved and coefficients are cast.
    x_t32 = d.q_sample(x0.float(), t, noise.float())
    assert x_t32.dtype == torch.float32
    torch.testing.assert_close(x_t32, x_t.float())


def test_q_sample_statistics():
    d = GaussianDiffusion(num_timesteps=20)
    torch.manual_seed(0)
    n, step = 20000, 7
    x0 = torch.tensor([[0.5, -1.0], [2.0, 0.0]]).expand(n, 1, 2, 2)
    x_t = d.q_sample(x0, torch.full((n, ), step))  # noise drawn inside
    a_bar = d.alphas_cumprod[step].item()
    # Standard error of the mean is sqrt((1 - a_bar) / n) < 0.007: 4 sigma.
    torch.testing.assert_close(
        x_t.mean(0), math.sqrt(a_bar) * x0[0], atol=0.03, rtol=0)
    # Relative std of a sample variance is sqrt(2 / n) = 1%: 5 sigma.
    torch.testing.assert_close(
        x_t.var(0), torch.full((1, 2, 2), 1 - a_bar), atol=0, rtol=0.05)


def test_predict_xstart_inverts_q_sample():
    d = GaussianDiffusion(num_timesteps=50)
    x0 = torch.randn(SHAPE, generator=gen(1), dtype=torch.float64)
    noise = torch.randn(SHAPE, generator=gen(2), dtype=torch.float64)
    t = torch.tensor([3, 49])
    x_t = d.q_sample(x0, t, noise)
    torch.testing.assert_close(d.predict_xstart_from_eps(x_t, t, noise), x0)


def test_q_sample_checks():
    d = GaussianDiffusion(num_timesteps=10)
    x0 = torch.zeros(SHAPE)
    with pytest.raises(AssertionError):
        d.q_sample(x0, torch.tensor([1, 2, 3]), torch.zeros(SHAPE))
    with pytest.raises(AssertionError):
        d.q_sample(x0, torch.tensor([1, 2]), torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match=r'\[0, 9\]'):
        d.q_sample(x0, torch.tensor([-1, 2]), torch.zeros(SHAPE))
    with pytest.raises(ValueError, match=r'\[0, 9\]'):
        d.q_sample(x0, torch.tensor([10, 2]), torch.zeros(SHAPE))


def test_timesteps():
    d = GaussianDiffusion(num_timesteps=1000)
    ts = d.timesteps(4)
    assert ts.dtype == torch.long
    assert ts.tolist() == [999, 749, 499, 249]
    assert d.timesteps(1).tolist() == [999]
    assert d.timesteps(1000).tolist() == list(range(999, -1, -1))
    for k in (3, 7, 333, 999):
        ts = d.timesteps(k)
        assert len(ts) == k and ts[0] == 999 and ts[-1] >= 0
        assert torch.all(ts[:-1] > ts[1:])
    with pytest.raises(ValueError, match=r'\[1, 1000\]'):
        d.timesteps(0)
    with pytest.raises(ValueError, match=r'\[1, 1000\]'):
        d.timesteps(1001)


def test_ddpm_step_is_posterior_sample():
    """With the oracle eps, Eq. 10 is the true posterior mean mu_tilde."""
    d = GaussianDiffusion(num_timesteps=30)
    x0 = torch.randn(SHAPE, generator=gen(1), dtype=torch.float64)
    x_t = torch.randn(SHAPE, generator=gen(2), dtype=torch.float64)
    z = torch.randn(SHAPE, generator=gen(3), dtype=torch.float64)
    step = 12
    eps = make_oracle(d, x0)(x_t, torch.full((2, ), step))
    a, a_bar = 1 - d.betas[step].item(), d.alphas_cumprod[step].item()
    a_bar_prev, beta = d.alphas_cumprod[step - 1].item(), d.betas[step].item()
    mu_tilde = (
        math.sqrt(a_bar_prev) * beta / (1 - a_bar) * x0 + math.sqrt(a) *
        (1 - a_bar_prev) / (1 - a_bar) * x_t)
    var_tilde = (1 - a_bar_prev) / (1 - a_bar) * beta
    torch.testing.assert_close(
        ddpm_step(d, eps, step, x_t, noise=z),
        mu_tilde + math.sqrt(var_tilde) * z)
    # Algorithm 2, literally.
    torch.testing.assert_close(
        ddpm_step(d, eps, step, x_t, noise=z),
        (x_t - beta / math.sqrt(1 - a_bar) * eps) / math.sqrt(a) +
        math.sqrt(var_tilde) * z)
    # z = 0 at the last step (paper's t = 1).
    eps0 = make_oracle(d, x0)(x_t, torch.zeros(2, dtype=torch.long))
    torch.testing.assert_close(
        ddpm_step(d, eps0, 0, x_t, noise=z), ddpm_step(d, eps0, 0, x_t))
    torch.testing.assert_close(ddpm_step(d, eps0, 0, x_t), x0)


@pytest.mark.parametrize('K', [1, 2, 10, 50])
def test_ddim_eta0_recovers_x0_with_oracle(K):
    d = GaussianDiffusion(num_timesteps=50)
    x0 = torch.randn(SHAPE, generator=gen(1), dtype=torch.float64)
    out = d.sample(
        make_oracle(d, x0),
        SHAPE,
        sampler='ddim',
        num_steps=K,
        generator=gen(0),
        dtype=torch.float64)
    torch.testing.assert_close(out, x0, atol=1e-10, rtol=0)


def test_ddim_eta0_recovers_x0_full_schedule_one_step():
    d = GaussianDiffusion(num_timesteps=1000)
    x0 = torch.randn(SHAPE, generator=gen(1), dtype=torch.float64)
    out = d.sample(
        make_oracle(d, x0),
        SHAPE,
        sampler='ddim',
        num_steps=1,
        generator=gen(0),
        dtype=torch.float64)
    torch.testing.assert_close(out, x0, atol=1e-10, rtol=0)


@pytest.mark.parametrize('dtype,atol', [(torch.float64, 1e-10),
                                        (torch.float32, 1e-5)])
def test_ddpm_with_oracle_ends_at_x0(dtype, atol):
    # With the oracle eps every DDPM step samples the true posterior
    # q(x_{t-1} | x_t, x_0), and the last step (z = 0, alpha_bar_1 = alpha_1,
    # 1 - alpha_bar_1 = beta_1) reduces to predict_xstart_from_eps, which
    # inverts the oracle exactly, whatever the earlier noise. Only rounding
    # is left: in float32 the oracle's eps carries ~1e-5 error (an ulp of
    # |x_1| ~ 3 divided by sqrt(1 - alpha_bar_1) = 0.01), multiplied back
    # by 0.01 in the last step: ~10 ulp of O(1) values, 2.6e-6 measured.
    # atol = 1e-5 (float32) / 1e-10 (float64) keeps a 4x margin.
    d = GaussianDiffusion(num_timesteps=40)
    x0 = torch.randn(SHAPE, generator=gen(1), dtype=dtype)
    out = d.sample(make_oracle(d, x0), SHAPE, generator=gen(0), dtype=dtype)
    assert out.dtype == dtype
    torch.testing.assert_close(out, x0, atol=atol, rtol=0)


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_ddim_eta1_full_equals_ddpm(dtype):
    d = GaussianDiffusion(num_timesteps=20)
    ddpm = d.sample(linear_eps_fn, SHAPE, generator=gen(5), dtype=dtype)
    ddim = d.sample(
        linear_eps_fn,
        SHAPE,
        sampler='ddim',
        eta=1.0,
        generator=gen(5),
        dtype=dtype)
    torch.testing.assert_close(ddim, ddpm)
    # Step by step as well, including the last step.
    x = torch.randn(SHAPE, generator=gen(6), dtype=dtype)
    z = torch.randn(SHAPE, generator=gen(7), dtype=dtype)
    for step in (19, 10, 1, 0):
        eps = linear_eps_fn(x, torch.full((2, ), step))
        torch.testing.assert_close(
            ddim_step(d, eps, step, step - 1, x, eta=1.0, noise=z),
            ddpm_step(d, eps, step, x, noise=z))


@pytest.mark.parametrize('sampler,num_steps,eta', [('ddpm', None, 0.0),
                                                   ('ddim', 7, 0.0),
                                                   ('ddim', 7, 0.5)])
def test_float32_matches_float64(sampler, num_steps, eta):
    # Both runs get identical noise (draws are float32 whatever the target
    # dtype), so only float32 rounding differs: ~1 ulp (6e-8 relative) per
    # operation on O(1) values, a handful of operations per step, and each
    # step scales the error by at most 1/sqrt(alpha_t) < 1.01. Over <= 30
    # steps this stays below ~1e-6 (6e-7 measured): 1e-5 is a 10x margin.
    d = GaussianDiffusion(num_timesteps=30)
    kw = dict(sampler=sampler, num_steps=num_steps, eta=eta)
    out64 = d.sample(
        linear_eps_fn, SHAPE, generator=gen(3), dtype=torch.float64, **kw)
    out32 = d.sample(
        linear_eps_fn, SHAPE, generator=gen(3), dtype=torch.float32, **kw)
    assert out32.dtype == torch.float32 and out64.dtype == torch.float64
    torch.testing.assert_close(out32.double(), out64, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('sampler,eta', [('ddpm', 0.0), ('ddim', 0.0),
                                         ('ddim', 1.0)])
def test_reproducibility(sampler, eta):
    d = GaussianDiffusion(num_timesteps=10)
    kw = dict(sampler=sampler, eta=eta)
    a = d.sample(linear_eps_fn, SHAPE, generator=gen(0), **kw)
    b = d.sample(linear_eps_fn, SHAPE, generator=gen(0), **kw)
    c = d.sample(linear_eps_fn, SHAPE, generator=gen(1), **kw)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert a.shape == SHAPE and a.dtype == torch.float32


def _consumed(d, expected_draws, **kw):
    g = gen(11)
    d.sample(linear_eps_fn, SHAPE, generator=g, **kw)
    ref = gen(11)
    for _ in range(expected_draws):
        torch.randn(SHAPE, generator=ref, dtype=torch.float32)
    return torch.equal(g.get_state(), ref.get_state())


def test_generator_draws():
    d = GaussianDiffusion(num_timesteps=5)
    # DDPM: x_T, then one z for each of t = 4, 3, 2, 1 (none at t = 0).
    assert _consumed(d, 1 + 4)
    assert not _consumed(d, 1 + 5)
    # DDIM, eta = 0: only x_T.
    assert _consumed(d, 1, sampler='ddim')
    assert _consumed(d, 1, sampler='ddim', num_steps=3)
    # DDIM, eta > 0: x_T, then one z per step whose t_prev >= 0.
    assert _consumed(d, 1 + 2, sampler='ddim', num_steps=3, eta=0.5)
    # Given x_T: only the per-step draws.
    assert _consumed(d, 4, noise=torch.zeros(SHAPE))


def test_given_noise_is_x_T():
    d = GaussianDiffusion(num_timesteps=10)
    x_T = torch.randn(SHAPE, generator=gen(2), dtype=torch.float64)
    seen = []

    def eps_fn(x_t, t):
        seen.append((x_t.clone(), t.clone()))
        return linear_eps_fn(x_t, t)

    out = d.sample(eps_fn, SHAPE, sampler='ddim', num_steps=4, noise=x_T)
    assert out.dtype == torch.float64  # noise's dtype wins over `dtype`
    assert torch.equal(seen[0][0], x_T)
    assert [s[1].tolist() for s in seen] == [[9, 9], [7, 7], [4, 4], [2, 2]]
    assert all(s[1].dtype == torch.long for s in seen)
    with pytest.raises(ValueError, match='shape'):
        d.sample(eps_fn, SHAPE, noise=torch.zeros(1, 3, 4, 4))


def test_ddpm_visits_every_step():
    d = GaussianDiffusion(num_timesteps=6)
    steps = []

    def eps_fn(x_t, t):
        steps.append(t[0].item())
        return torch.zeros_like(x_t)

    d.sample(eps_fn, SHAPE, generator=gen(0))
    assert steps == [5, 4, 3, 2, 1, 0]


def test_cpu_generator_and_explicit_device():
    d = GaussianDiffusion(num_timesteps=10)
    a = d.sample(linear_eps_fn, SHAPE, generator=gen(0))
    b = d.sample(linear_eps_fn, SHAPE, generator=gen(0), device='cpu')
    assert torch.equal(a, b)
    if torch.cuda.is_available():
        c = d.sample(linear_eps_fn, SHAPE, generator=gen(0), device='cuda')
        assert c.device.type == 'cuda'
        torch.testing.assert_close(c.cpu(), a, atol=1e-5, rtol=1e-5)


def test_no_autograd_graph():
    d = GaussianDiffusion(num_timesteps=10)
    w = torch.nn.Parameter(torch.tensor(0.3))

    def eps_fn(x_t, t):
        return w * x_t

    for sampler in SAMPLERS:
        out = d.sample(eps_fn, SHAPE, sampler=sampler, generator=gen(0))
        assert not out.requires_grad and out.grad_fn is None


def test_invalid_sample_options():
    d = GaussianDiffusion(num_timesteps=10)
    with pytest.raises(ValueError) as info:
        d.sample(linear_eps_fn, SHAPE, sampler='euler')
    assert 'euler' in str(info.value)
    assert all(s in str(info.value) for s in SAMPLERS)
    with pytest.raises(ValueError, match=r'11.*\[1, 10\]|\[1, 10\].*11'):
        d.sample(linear_eps_fn, SHAPE, sampler='ddim', num_steps=11)
    with pytest.raises(ValueError, match=r'\[1, 10\]'):
        d.sample(linear_eps_fn, SHAPE, sampler='ddim', num_steps=0)
    with pytest.raises(ValueError, match='ddim'):
        d.sample(linear_eps_fn, SHAPE, sampler='ddpm', num_steps=5)
    with pytest.raises(ValueError, match='eta'):
        d.sample(linear_eps_fn, SHAPE, sampler='ddim', eta=-0.1)
    with pytest.raises(ValueError, match='shape'):
        d.sample(lambda x, t: x[:1], SHAPE)
    # ddpm with num_steps == T is allowed.
    d.sample(linear_eps_fn, SHAPE, sampler='ddpm', num_steps=10)
    with pytest.raises(ValueError) as info:
        GaussianDiffusion(num_timesteps=10, beta_schedule='sigmoid')
    assert 'linear' in str(info.value) and 'cosine' in str(info.value)


def test_invalid_step_arguments():
    d = GaussianDiffusion(num_timesteps=10)
    x = torch.zeros(SHAPE)
    with pytest.raises(ValueError, match='t must lie'):
        ddpm_step(d, x, 10, x)
    with pytest.raises(ValueError, match='t_prev'):
        ddim_step(d, x, 3, 3, x)
    with pytest.raises(ValueError, match='t_prev'):
        ddim_step(d, x, 3, -2, x)
    with pytest.raises(AssertionError):
        ddpm_step(d, torch.zeros(1, 3, 4, 4), 3, x)


def test_predict_eps_from_xstart_inverts_predict_xstart_from_eps():
    d = GaussianDiffusion(num_timesteps=20)
    g = torch.Generator().manual_seed(0)
    x_t = torch.randn(3, 2, 4, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(3, 2, 4, 4, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 7, 19])
    x0 = d.predict_xstart_from_eps(x_t, t, eps)
    torch.testing.assert_close(d.predict_eps_from_xstart(x_t, t, x0), eps)


def test_clip_bound_bounds_the_prediction():
    """A wild eps_fn: clipped DDIM(eta=0) ends inside [-c, c]."""
    d = GaussianDiffusion(num_timesteps=50)
    shape = (2, 3, 4, 4)

    def wild(x, t):
        return 50 * torch.ones_like(x)

    out = d.sample(
        wild,
        shape,
        sampler='ddim',
        num_steps=4,
        generator=torch.Generator().manual_seed(0),
        clip_bound=2.0)
    assert out.abs().max() <= 2.0 + 1e-5
    free = d.sample(
        wild,
        shape,
        sampler='ddim',
        num_steps=4,
        generator=torch.Generator().manual_seed(0))
    assert free.abs().max() > 2.0


@pytest.mark.parametrize('sampler,num_steps', [('ddim', 5), ('ddpm', None)])
def test_clip_bound_keeps_oracle_exact(sampler, num_steps):
    """Clipping to a range holding x0 changes nothing for the oracle."""
    d = GaussianDiffusion(num_timesteps=30)
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(2, 3, 4, 4, generator=g, dtype=torch.float64) * 2 - 1

    def oracle(x, t):
        return d.predict_eps_from_xstart(x, t, x0)

    kw = dict(sampler=sampler, num_steps=num_steps, dtype=torch.float64)
    a = d.sample(
        oracle,
        x0.shape,
        generator=torch.Generator().manual_seed(2),
        clip_bound=1.0,
        **kw)
    b = d.sample(
        oracle, x0.shape, generator=torch.Generator().manual_seed(2), **kw)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, x0)


def test_clip_bound_must_be_positive():
    d = GaussianDiffusion(num_timesteps=10)
    with pytest.raises(ValueError, match="clip_bound"):
        d.sample(lambda x, t: x, (1, 1, 2, 2), clip_bound=0.)


@pytest.mark.parametrize('prediction_type', ['epsilon', 'sample', 'v'])
def test_prediction_types_round_trip(prediction_type):
    """The training target of each parameterisation converts back to the
    noise that made x_t."""
    d = GaussianDiffusion(num_timesteps=50)
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(3, 2, 4, 4, generator=g, dtype=torch.float64)
    noise = torch.randn(3, 2, 4, 4, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 20, 49])
    x_t = d.q_sample(x0, t, noise)
    d = GaussianDiffusion(num_timesteps=50, prediction_type=prediction_type)
    target = d.training_target(x0, t, noise)
    _, eps = d.predict_start_and_eps(target, x_t, t)
    torch.testing.assert_close(eps, noise)


def test_v_target_formula():
    d = GaussianDiffusion(num_timesteps=10)
    x0 = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    noise = 2 * torch.ones_like(x0)
    t = torch.tensor([4])
    ab = d.alphas_cumprod[4].item()
    d = GaussianDiffusion(num_timesteps=10, prediction_type='v')
    v = d.training_target(x0, t, noise)
    assert v.item() == pytest.approx(math.sqrt(ab) * 2 - math.sqrt(1 - ab))


def test_unknown_prediction_type():
    with pytest.raises(ValueError, match='epsilon'):
        GaussianDiffusion(num_timesteps=10, prediction_type='score')


def test_truncated_timesteps_and_checks():
    d = GaussianDiffusion(num_timesteps=1000)
    assert d.timesteps(1, start_step=300).tolist() == [299]
    assert d.timesteps(3, start_step=300).tolist() == [299, 199, 99]
    assert d.timesteps(
        300, start_step=300).tolist() == list(range(299, -1, -1))
    with pytest.raises(ValueError, match=r'\[1, 300\]'):
        d.timesteps(301, start_step=300)
    with pytest.raises(ValueError, match='start_step needs noise'):
        d.sample(
            linear_eps_fn, SHAPE, sampler='ddim', num_steps=1, start_step=300)


@pytest.mark.parametrize('sampler,num_steps', [('ddim', 1), ('ddim', 4),
                                               ('ddpm', None)])
def test_truncated_sample_starts_at_start_step(sampler, num_steps):
    """The truncated process calls the network first at T' - 1, from the
    given x_T', and with the oracle still ends at x0."""
    d = GaussianDiffusion(num_timesteps=100)
    x0 = torch.randn(SHAPE, generator=gen(1), dtype=torch.float64)
    noise = torch.randn(SHAPE, generator=gen(2), dtype=torch.float64)
    x_init = d.q_sample(x0, torch.full((SHAPE[0], ), 39), noise)
    oracle = make_oracle(d, x0)
    calls = []

    def eps_fn(x_t, t):
        calls.append((int(t[0]), x_t.clone()))
        return oracle(x_t, t)

    out = d.sample(
        eps_fn,
        SHAPE,
        sampler=sampler,
        num_steps=num_steps,
        noise=x_init,
        start_step=40,
        generator=gen(0))
    assert calls[0][0] == 39
    assert torch.equal(calls[0][1], x_init)
    assert len(calls) == (num_steps or 40)
    torch.testing.assert_close(out, x0, atol=1e-6, rtol=0)
