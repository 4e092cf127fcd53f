# Copyright (c) mmseg-resensemble contributors. All rights reserved.
import inspect

import pytest
import torch
from mmengine.structures import PixelData
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import mmseg_resensemble  # noqa: F401
from mmseg_resensemble.models.decode_heads import E2EConditionedHead
from mmseg_resensemble.models.decode_heads.residual_diffusion_head import (
    TEST_CFG_DEFAULTS, autocast_dtype)
from mmseg_resensemble.models.utils import probs_to_analog

K = 3


def build_head(**kwargs):
    cfg = dict(
        type='ResidualDiffusionHead',
        in_channels=8,
        channels=16,
        num_classes=K,
        denoiser=dict(
            type='DilatedResDenoiser', num_blocks=2, dilations=(1, 2)),
        norm_cfg=dict(type='GN', num_groups=4),
        diffusion=dict(num_timesteps=10))
    cfg.update(kwargs)
    head = MODELS.build(cfg)
    head.init_weights()
    return head


def samples_with_gt(labels):
    samples = []
    for label in labels:
        ds = SegDataSample()
        ds.gt_sem_seg = PixelData(data=label[None].long())
        samples.append(ds)
    return samples


def random_inputs(n=2, size=(8, 8)):
    torch.manual_seed(0)
    feats = [torch.randn(n, 8, *size)]
    probs = torch.softmax(torch.randn(n, K, *size), dim=1)
    labels = torch.randint(0, K, (n, *size))
    return feats, probs, labels


def oracle_forward(head, x_start):
    """εθ that returns the true noise of a known x_start."""
    d = head.diffusion

    def forward(cond, x_hat, x_t, t):
        ab = d.alphas_cumprod[t].to(x_t)[:, None, None, None]
        return (x_t - ab.sqrt() * x_start) / (1 - ab).sqrt()

    return forward


def test_forward_shape():
    head = build_head()
    feats, probs, _ = random_inputs()
    cond = head.encode_condition(feats, (8, 8))
    x = torch.randn(2, K, 8, 8)
    out = head(cond, probs_to_analog(probs, 1.), x, torch.tensor([0, 9]))
    assert out.shape == (2, K, 8, 8)


def test_working_stride_resizes_condition():
    head = build_head(working_stride=2)
    feats, _, _ = random_inputs(size=(4, 4))
    cond = head.encode_condition(feats, (15, 16))
    assert cond.shape == (2, 16, 8, 8)


def test_loss_is_finite_and_trains():
    head = build_head()
    feats, probs, labels = random_inputs()
    losses = head.loss(feats, probs, samples_with_gt(labels), None)
    assert set(losses) == {'loss_diffusion'}
    loss = losses['loss_diffusion']
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in head.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)


def spy_on_q_sample(monkeypatch, head):
    """Record the x_start that the head diffuses."""
    seen = {}
    q_sample = head.diffusion.q_sample

    def spy(x_start, t, noise):
        seen['x_start'] = x_start
        return q_sample(x_start, t, noise)

    monkeypatch.setattr(head.diffusion, 'q_sample', spy)
    return seen


def test_loss_target_is_residual(monkeypatch):
    """Algorithm 1: x̄0 = x0 − R = 2·x0 − x̂0, and R = 0 where ignored."""
    head = build_head(scale=0.5)
    feats, probs, labels = random_inputs()
    labels[0, :2] = 255
    seen = spy_on_q_sample(monkeypatch, head)
    head.loss(feats, probs, samples_with_gt(labels), None)
    x0 = probs_to_analog(
        torch.nn.functional.one_hot(labels.clamp(max=K - 1),
                                    K).permute(0, 3, 1, 2).float(), 0.5)
    x_hat = probs_to_analog(probs, 0.5)
    expected = 2 * x0 - x_hat
    expected[0, :, :2] = x_hat[0, :, :2]
    torch.testing.assert_close(seen['x_start'], expected)


def test_ignored_pixels_add_nothing():
    head = build_head()
    feats, probs, labels = random_inputs()
    labels[:] = 255
    loss = head.loss(feats, probs, samples_with_gt(labels), None)
    assert loss['loss_diffusion'].item() == 0


def test_plain_ddpm_target_is_x0(monkeypatch):
    head = build_head(residual_target=False, condition_on_e2e=False)
    feats, probs, labels = random_inputs()
    seen = spy_on_q_sample(monkeypatch, head)
    head.loss(feats, probs, samples_with_gt(labels), None)
    assert set(seen['x_start'].unique().tolist()) == {-1.0, 1.0}


@pytest.mark.parametrize('sampler,num_steps', [('ddim', 3), ('ddpm', None)])
def test_predict_with_oracle_recovers_ground_truth(monkeypatch, sampler,
                                                   num_steps):
    """With the true noise of x̄0, the ensemble ½(x̄0 + x̂0) is x0."""
    head = build_head()
    feats, probs, labels = random_inputs()
    onehot = torch.nn.functional.one_hot(labels, K).permute(0, 3, 1, 2).float()
    x_start = 2 * probs_to_analog(onehot, 1.) - probs_to_analog(probs, 1.)
    monkeypatch.setattr(head, 'forward', oracle_forward(head, x_start))
    out = head.predict(feats, probs, (8, 8),
                       dict(sampler=sampler, num_steps=num_steps))
    torch.testing.assert_close(out['probs'], onehot, atol=1e-4, rtol=0)
    assert torch.equal(out['probs'].argmax(1), labels)


def test_predict_outputs_and_uncertainty():
    head = build_head()
    feats, probs, _ = random_inputs()
    one = head.predict(feats, probs, (8, 8), dict(sampler='ddim', num_steps=2))
    assert one['probs'].shape == (2, K, 8, 8)
    assert one['uncertainty'].shape == (2, 1, 8, 8)
    torch.testing.assert_close(one['probs'].sum(1), torch.ones(2, 8, 8))
    assert one['uncertainty'].abs().max() == 0
    many = head.predict(feats, probs, (8, 8),
                        dict(sampler='ddim', num_steps=2, num_samples=4))
    assert many['probs'].shape == (2, K, 8, 8)
    assert many['uncertainty'].min() >= 0
    assert many['uncertainty'].max() > 0


def test_predict_is_reproducible_from_seed():
    head = build_head()
    feats, probs, _ = random_inputs()
    cfg = dict(sampler='ddim', num_steps=3, eta=1.0, seed=7)
    a = head.predict(feats, probs, (8, 8), cfg)['probs']
    b = head.predict(feats, probs, (8, 8), cfg)['probs']
    c = head.predict(feats, probs, (8, 8), dict(cfg, seed=8))['probs']
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_condition_is_computed_once_per_image():
    head = build_head()
    feats, probs, _ = random_inputs()
    calls = []
    # the projection's norm runs once per condition
    head.denoiser.cond_proj.norm.register_forward_hook(
        lambda *args: calls.append(1))
    head.predict(feats, probs, (8, 8),
                 dict(sampler='ddim', num_steps=5, num_samples=2))
    assert len(calls) == 1


def test_binary_task():
    head = build_head(num_classes=2)
    feats, _, _ = random_inputs()
    probs = torch.softmax(torch.randn(2, 2, 8, 8), 1)
    labels = torch.randint(0, 2, (2, 8, 8))
    assert torch.isfinite(
        head.loss(feats, probs, samples_with_gt(labels),
                  None)['loss_diffusion'])
    out = head.predict(feats, probs, (8, 8), dict(sampler='ddim', num_steps=2))
    assert out['probs'].shape == (2, 2, 8, 8)


@pytest.mark.parametrize(
    'kwargs,match', [(dict(
        denoiser=dict(
            type='DilatedResDenoiser', num_blocks=2, dilations=(1, 2, 3))),
                      'dilations'), (dict(scale=0.), 'scale'),
                     (dict(working_stride=0), 'working_stride'),
                     (dict(diffusion=dict(beta_schedule='square')), 'square')])
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_head(**kwargs)


def test_bad_inputs_raise():
    head = build_head(debug=True)
    feats, probs, labels = random_inputs()
    with pytest.raises(ValueError, match='4 classes'):
        head.predict(feats, torch.softmax(torch.randn(2, 4, 8, 8), 1), (8, 8),
                     {})
    with pytest.raises(ValueError, match='num_samples'):
        head.predict(feats, probs, (8, 8), dict(num_samples=0))
    with pytest.raises(ValueError, match='sampler'):
        head.predict(feats, probs, (8, 8), dict(sampler='euler'))
    labels[0, 0, 0] = 5
    with pytest.raises(ValueError, match=r'labels \[5\]'):
        head.loss(feats, probs, samples_with_gt(labels), None)


@pytest.mark.parametrize('prediction_type', ['sample', 'v'])
def test_other_prediction_types_train_and_sample(monkeypatch, prediction_type):
    head = build_head(
        diffusion=dict(num_timesteps=10, prediction_type=prediction_type))
    feats, probs, labels = random_inputs()
    loss = head.loss(feats, probs, samples_with_gt(labels), None)
    assert torch.isfinite(loss['loss_diffusion'])
    # an oracle that outputs the exact target recovers the ground truth
    onehot = torch.nn.functional.one_hot(labels, K).permute(0, 3, 1, 2).float()
    x_start = 2 * probs_to_analog(onehot, 1.) - probs_to_analog(probs, 1.)
    d = head.diffusion

    def oracle(cond, x_hat, x_t, t):
        noise = d.predict_eps_from_xstart(x_t, t, x_start)
        return d.training_target(x_start, t, noise)

    monkeypatch.setattr(head, 'forward', oracle)
    out = head.predict(feats, probs, (8, 8), dict(sampler='ddim', num_steps=3))
    assert torch.equal(out['probs'].argmax(1), labels)


def test_unknown_prediction_type_raises():
    with pytest.raises(ValueError, match='prediction_type'):
        build_head(diffusion=dict(num_timesteps=10, prediction_type='score'))


def test_refiner_head_trains_with_cross_entropy_and_predicts():
    head = build_head(type='E2ERefinerHead')
    feats, probs, labels = random_inputs()
    loss = head.loss(feats, probs, samples_with_gt(labels), None)['loss_ce']
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    assert head.denoiser.mask_in.weight.grad is not None
    out = head.predict(feats, probs, (8, 8), dict(sampler='ddim', num_steps=4))
    torch.testing.assert_close(out['probs'].sum(1), torch.ones(2, 8, 8))
    assert out['uncertainty'].abs().max() == 0
    # a few steps of training lower the loss (it learns, deterministically)
    optim = torch.optim.Adam(head.parameters(), lr=1e-2)
    first = None
    for _ in range(20):
        optim.zero_grad()
        loss = head.loss(feats, probs, samples_with_gt(labels),
                         None)['loss_ce']
        loss.backward()
        optim.step()
        first = loss.item() if first is None else first
    assert loss.item() < first


def test_ensemble_weight_blends_the_two_learners(monkeypatch):
    """w·x̄0 + (1 − w)·x̂0: w = 0 is the E2E learner, w = ½ Eq. 15."""
    head = build_head()
    feats, probs, labels = random_inputs()
    onehot = torch.nn.functional.one_hot(labels, K).permute(0, 3, 1, 2).float()
    x_start = 2 * probs_to_analog(onehot, 1.) - probs_to_analog(probs, 1.)
    monkeypatch.setattr(head, 'forward', oracle_forward(head, x_start))
    cfg = dict(sampler='ddim', num_steps=1)
    e2e = head.predict(feats, probs, (8, 8), dict(cfg, ensemble_weight=0.))
    torch.testing.assert_close(e2e['probs'], probs, atol=1e-5, rtol=0)
    half = head.predict(feats, probs, (8, 8), dict(cfg, ensemble_weight=0.5))
    torch.testing.assert_close(
        half['probs'],
        head.predict(feats, probs, (8, 8), cfg)['probs'])
    torch.testing.assert_close(half['probs'], onehot, atol=1e-4, rtol=0)
    for bad in (-0.1, 1.5, True, '0.5'):
        with pytest.raises(ValueError, match='ensemble_weight'):
            head.predict(feats, probs, (8, 8), dict(ensemble_weight=bad))


def test_start_step_noises_the_e2e_output(monkeypatch):
    """Truncated diffusion: the first network call sees x̂0 noised to
    T' (√ᾱ·x̂0 + √(1−ᾱ)·ε), at step T' − 1."""
    head = build_head()
    feats, probs, _ = random_inputs()
    seen = []
    forward = head.forward

    def spy(cond, x_hat, x_t, t):
        seen.append((t.clone(), x_hat.clone(), x_t.clone()))
        return forward(cond, x_hat, x_t, t)

    monkeypatch.setattr(head, 'forward', spy)
    head.predict(feats, probs, (8, 8),
                 dict(sampler='ddim', num_steps=1, start_step=4, seed=3))
    t, x_hat, x_t = seen[0]
    assert t.tolist() == [3, 3]
    noise = torch.randn(
        x_hat.shape, generator=torch.Generator().manual_seed(3))
    ab = head.diffusion.alphas_cumprod[3].item()
    torch.testing.assert_close(
        x_t, ab**0.5 * x_hat + (1 - ab)**0.5 * noise, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=r'test_cfg\.start_step'):
        head.predict(feats, probs, (8, 8),
                     dict(sampler='ddim', num_steps=1, start_step=11))


def test_autocast_runs_the_network_in_bf16_and_the_sampler_in_fp32(
        monkeypatch):
    head = build_head()
    feats, probs, _ = random_inputs()
    dtypes = []
    forward = head.denoiser.forward

    def spy(cond, x_hat, x_t, t):
        out = forward(cond, x_hat, x_t, t)
        dtypes.append((cond.dtype, x_t.dtype, out.dtype))
        return out

    monkeypatch.setattr(head.denoiser, 'forward', spy)
    cfg = dict(sampler='ddim', num_steps=2, seed=0)
    fp32 = head.predict(feats, probs, (8, 8), dict(cfg, autocast='fp32'))
    bf16 = head.predict(feats, probs, (8, 8), dict(cfg, autocast='bf16'))
    assert dtypes[:2] == [(torch.float32, ) * 3] * 2
    # under autocast: a bf16 condition and output, an fp32 sample
    assert dtypes[2:] == [(torch.bfloat16, torch.float32, torch.bfloat16)] * 2
    assert bf16['probs'].dtype == torch.float32
    assert (bf16['probs'] - fp32['probs']).abs().max() < 0.05


def test_autocast_auto_is_fp32_on_the_cpu_and_checked():
    assert TEST_CFG_DEFAULTS['autocast'] == 'fp32'
    assert autocast_dtype('auto', torch.device('cpu')) is None
    assert autocast_dtype('fp16', torch.device('cpu')) == torch.float16
    head = build_head()
    with pytest.raises(ValueError, match="test_cfg.autocast .* 'int8'"):
        head.check_test_cfg(dict(autocast='int8'))


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason='needs a CUDA device')
def test_on_cuda_noise_is_drawn_there_and_auto_runs_bf16(monkeypatch):
    head = build_head().cuda()
    feats, probs, _ = random_inputs()
    feats, probs = [f.cuda() for f in feats], probs.cuda()
    draws, dtypes = [], []
    randn, forward = torch.randn, head.denoiser.forward

    def spy_randn(*args, **kwargs):
        z = randn(*args, **kwargs)
        draws.append(z.device.type)
        return z

    def spy_forward(cond, x_hat, x_t, t):
        out = forward(cond, x_hat, x_t, t)
        dtypes.append(out.dtype)
        return out

    monkeypatch.setattr(torch, 'randn', spy_randn)
    monkeypatch.setattr(head.denoiser, 'forward', spy_forward)
    cfg = dict(sampler='ddim', num_steps=2, eta=1.0, seed=3, autocast='auto')
    a = head.predict(feats, probs, (8, 8), cfg)['probs']
    b = head.predict(feats, probs, (8, 8), cfg)['probs']
    assert torch.equal(a, b)
    assert draws and set(draws) == {'cuda'}
    assert set(dtypes) == {torch.bfloat16}


# ----------------------------------------------------------------------
# the task loss on the ensemble, training steps, self-aligned training
# ----------------------------------------------------------------------
CE = dict(type='CrossEntropyLoss', loss_name='loss_ce', avg_non_ignore=True)
TASK_LOSSES = [
    CE,
    dict(type='LovaszLoss', loss_name='loss_lovasz', reduction='none'),
    dict(type='DiceLoss', loss_name='loss_dice')
]


@pytest.mark.parametrize('prediction_type', ['sample', 'epsilon', 'v'])
def test_loss_ensemble_adds_every_task_loss_with_gradients(prediction_type):
    head = build_head(
        diffusion=dict(num_timesteps=10, prediction_type=prediction_type),
        loss_ensemble=TASK_LOSSES)
    feats, probs, labels = random_inputs()
    labels[0, :2] = 255  # ignored pixels
    losses = head.loss(feats, probs, samples_with_gt(labels), None)
    assert set(losses) == {
        'loss_diffusion', 'loss_ce', 'loss_lovasz', 'loss_dice'
    }
    assert all(torch.isfinite(v) for v in losses.values())
    losses['loss_ce'].backward()
    grads = [p.grad for p in head.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)


def test_ensemble_scores_of_the_true_target_are_the_labels():
    """Oracle: with x̄0θ = 2·x0 − x̂0 and w = ½ the ensemble is x0, so the
    cross-entropy is -log(1 - (K-1)·1e-4) at most; with w = 0 it is the
    E2E learner's."""
    head = build_head(
        diffusion=dict(num_timesteps=10, prediction_type='sample'),
        loss_ensemble=CE)
    _, probs, labels = random_inputs()
    x_hat = probs_to_analog(probs, 1.)
    x0 = probs_to_analog(
        torch.nn.functional.one_hot(labels, K).permute(0, 3, 1, 2).float(), 1.)
    x_start = 2 * x0 - x_hat
    t = torch.tensor([9, 3])
    x_t = head.diffusion.q_sample(x_start, t)
    scores = head.ensemble_scores(x_start, x_t, t, x_hat, 0.5)
    ce = head.task_losses(scores, samples_with_gt(labels),
                          head.loss_ensemble)['loss_ce']
    assert ce < 1e-3
    e2e = head.ensemble_scores(x_start, x_t, t, x_hat, 0.)
    torch.testing.assert_close(
        e2e.exp(),
        probs.clamp(min=1e-4) / probs.clamp(min=1e-4).sum(1, keepdim=True))


def test_training_settings_read_train_cfg_once():
    head = build_head()
    s = head.training_settings(None)
    assert s.timesteps.spec == 'uniform' and s.self_aligned == 0
    assert s.first_step == 9 and s.ensemble_weight == 0.5
    s = head.training_settings(
        dict(timesteps='sampler', self_aligned=1),
        dict(sampler='ddim', num_steps=2, ensemble_weight='auto'))
    assert s.timesteps.steps == [4, 9] and s.ensemble_weight == 0.5
    s = head.training_settings(
        dict(timesteps=(3, 4)),
        dict(sampler='ddim', num_steps=1, ensemble_weight=0.3))
    assert (s.timesteps.low, s.timesteps.high) == (2, 3)
    assert s.ensemble_weight == 0.3
    for bad, match in ((dict(timestep='uniform'), 'unknown train_cfg'),
                       (dict(self_aligned=1.5), 'self_aligned'),
                       (dict(self_aligned=True), 'self_aligned'),
                       (dict(timesteps='ddim'), 'train_cfg.timesteps')):
        with pytest.raises(ValueError, match=match):
            head.training_settings(bad)


def test_training_draws_only_the_configured_steps():
    head = build_head()
    seen = []

    def forward(cond, x_hat, x_t, t):
        seen.extend(t.tolist())
        return x_t

    head.forward = forward
    feats, probs, labels = random_inputs()
    settings = head.training_settings(
        dict(timesteps='sampler'), dict(sampler='ddim', num_steps=2))
    for _ in range(10):
        head.loss(feats, probs, samples_with_gt(labels), settings)
    assert set(seen) == {4, 9}


def test_self_aligned_training_starts_from_the_first_estimate():
    """p = 1: a first pass at the sampler's first step without gradients;
    x̄t is built from its clipped estimate, and the target is the noise
    that takes the true x̄0 to that x̄t."""
    head = build_head(
        diffusion=dict(num_timesteps=10, prediction_type='epsilon'))
    calls = []
    estimate = torch.full((2, K, 8, 8), 0.25)

    def forward(cond, x_hat, x_t, t):
        calls.append((t.clone(), torch.is_grad_enabled(), x_t.clone()))
        if len(calls) == 1:  # ε whose x0 is ``estimate``
            return head.diffusion.predict_eps_from_xstart(x_t, t, estimate)
        return torch.zeros_like(x_t, requires_grad=True)

    head.forward = forward
    targets = []
    training_target = head.diffusion.training_target
    head.diffusion.training_target = lambda x0, t, noise: targets.append(
        (x0, t, noise)) or training_target(x0, t, noise)
    feats, probs, labels = random_inputs()
    settings = head.training_settings(dict(self_aligned=1.0))
    head.loss(feats, probs, samples_with_gt(labels), settings)
    (t1, grad1, _), (t2, grad2, x_t) = calls
    assert t1.tolist() == [9, 9] and not grad1 and grad2
    x_start, t, noise = targets[0]
    # the true target, and the noise that takes it to this x̄t
    x0 = probs_to_analog(
        torch.nn.functional.one_hot(labels, K).permute(0, 3, 1, 2).float(), 1.)
    torch.testing.assert_close(x_start, 2 * x0 - probs_to_analog(probs, 1.))
    torch.testing.assert_close(head.diffusion.q_sample(x_start, t, noise), x_t)
    # x̄t was built from the estimate: its mean is √ᾱt·estimate
    calls.clear()
    head.loss(feats, probs, samples_with_gt(labels),
              head.training_settings(dict(self_aligned=0.0)))
    assert len(calls) == 1


def test_auto_weight_reads_the_chosen_weight_of_the_checkpoint():
    head = build_head()
    head.eval()
    feats, probs, _ = random_inputs()
    cfg = dict(sampler='ddim', num_steps=1)

    def predict(**kw):
        return head.predict(feats, probs, (8, 8), dict(cfg, **kw))['probs']

    # none chosen: Eq. 15
    torch.testing.assert_close(
        predict(ensemble_weight='auto'), predict(ensemble_weight=0.5))
    head.chosen_ensemble_weight.fill_(0.)
    torch.testing.assert_close(
        predict(ensemble_weight='auto'), predict(ensemble_weight=0.))
    state = head.state_dict()
    assert float(state['chosen_ensemble_weight']) == 0.
    # a checkpoint from before the weight was chosen loads strictly
    del state['chosen_ensemble_weight']
    fresh = build_head()
    fresh.load_state_dict(state, strict=True)
    assert float(fresh.chosen_ensemble_weight) == -1  # none chosen
    with pytest.raises(ValueError, match="or 'auto'"):
        head.sampling_cfg(dict(ensemble_weight='best'))


def test_ensemble_parts_give_the_class_order_of_any_weight():
    head = build_head()
    head.eval()
    feats, probs, _ = random_inputs()
    for num_samples in (1, 3):
        cfg = dict(
            sampler='ddim',
            num_steps=1,
            num_samples=num_samples,
            ensemble_parts=True)
        out = head.predict(feats, probs, (8, 8),
                           dict(cfg, ensemble_weight=0.3))
        mix = 0.3 * out['sample_probs'] + 0.7 * out['e2e_head_probs']
        if num_samples == 1:
            assert torch.equal(mix.argmax(1), out['probs'].argmax(1))
        torch.testing.assert_close(out['e2e_head_probs'], probs)
    assert 'sample_probs' not in head.predict(feats, probs, (8, 8),
                                              cfg | dict(ensemble_parts=False))


def test_refiner_takes_a_list_of_losses():
    head = build_head(type='E2ERefinerHead', loss_decode=TASK_LOSSES)
    feats, probs, labels = random_inputs()
    losses = head.loss(feats, probs, samples_with_gt(labels), None)
    assert set(losses) == {'loss_ce', 'loss_lovasz', 'loss_dice'}
    sum(losses.values()).backward()


@pytest.mark.parametrize('head_type',
                         ['ResidualDiffusionHead', 'E2ERefinerHead'])
def test_both_heads_honour_one_contract(head_type):
    # not MMSeg decode heads (their loss/predict see only features), one
    # contract with x̂0 beside the features, each with a list of losses
    head = build_head(
        type=head_type,
        **({
            'loss_decode': TASK_LOSSES
        } if head_type == 'E2ERefinerHead' else {
            'loss_decode': [dict(type='DiffusionTargetLoss')],
            'loss_ensemble': TASK_LOSSES
        }))
    assert not isinstance(head, BaseDecodeHead)
    assert isinstance(head, E2EConditionedHead)
    for method in ('loss', 'predict'):
        assert list(inspect.signature(getattr(
            head, method)).parameters) == list(
                inspect.signature(getattr(E2EConditionedHead,
                                          method)).parameters)[1:]
    feats, probs, labels = random_inputs()
    losses = head.loss(feats, probs, samples_with_gt(labels), None)
    assert {'loss_ce', 'loss_lovasz', 'loss_dice'} <= set(losses)
    sum(losses.values()).backward()
    out = head.predict(feats, probs, (8, 8), dict(sampler='ddim', num_steps=1))
    assert out['probs'].shape == probs.shape
    assert out['uncertainty'].shape == (2, 1, 8, 8)


def test_decode_head_arguments_without_meaning_are_refused():
    # at their MMSeg defaults they are accepted (a decode head's config
    # converts by its type); anything else would be silently ignored
    build_head(dropout_ratio=0.1, conv_cfg=None, out_channels=K)
    with pytest.raises(ValueError, match=r'dropout_ratio=0\.5 has no meaning'):
        build_head(dropout_ratio=0.5)
    with pytest.raises(TypeError, match="unexpected argument 'colour'"):
        build_head(colour='red')
    with pytest.raises(ValueError, match='out_channels=1'):
        build_head(out_channels=1)
    with pytest.raises(ValueError, match="input_transform='resize_concat'"):
        build_head(input_transform='resize_concat')
