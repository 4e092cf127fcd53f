# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""A training step and a sampling step never copy from the device to the
host: the schedule is gathered on the device and every argument check is
done on the host (Python ints and shapes) or at build time."""
import pytest
import torch
from mmseg.registry import MODELS

import mmseg_resensemble  # noqa: F401
from tests.tiny_models import fcn_e2e, head_cfg, make_batch

# Tensor methods that hand a value to the host (each a synchronisation on
# an accelerator)
HOST_READS = ('item', 'tolist', 'cpu', 'numpy', '__bool__', '__int__',
              '__float__')


def build(head_type='ResidualDiffusionHead', debug=False, **test_cfg):
    return MODELS.build(
        dict(
            type='ResEnsembleSegmentor',
            e2e=fcn_e2e(),
            # debug=None would check CPU label maps (free there, skipped
            # on an accelerator: see test_no_synchronisation_on_cuda)
            decode_head=head_cfg(type=head_type, debug=debug),
            allow_random_e2e=True,
            test_cfg=dict(mode='whole', **test_cfg)))


def record_host_reads(monkeypatch):
    """Patch :data:`HOST_READS` to record each call (and still work)."""
    calls = []
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def spy(self, *args, _name=name, _original=original, **kwargs):
            calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, spy)
    return calls


def batch(model, training):
    data = model.data_preprocessor(make_batch(), training)
    return data['inputs'], data['data_samples']


@pytest.mark.parametrize('test_cfg', [
    dict(sampler='ddim', num_steps=2),
    dict(sampler='ddim', num_steps=2, eta=0.5, num_samples=2),
    dict(sampler='ddpm'),
    dict(sampler='ddim', num_steps=1, start_step=10),
])
def test_training_and_sampling_read_nothing_back(monkeypatch, test_cfg):
    model = build(**test_cfg)
    model.init_weights()
    train_inputs, train_samples = batch(model, True)
    test_inputs, test_samples = batch(model, False)
    calls = record_host_reads(monkeypatch)
    model.train()
    losses = model.loss(train_inputs, train_samples)
    sum(losses.values()).backward()
    assert calls == [], f'the training step read {calls} back'
    model.eval()
    with torch.no_grad():
        model.predict(test_inputs, test_samples)
    assert calls == [], f'the sampling step read {calls} back'
    monkeypatch.undo()
    # the spies saw the calls they should (the test is not vacuous)
    calls = record_host_reads(monkeypatch)
    torch.zeros(1).item()
    assert calls == ['item']


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason='needs a CUDA device')
def test_no_synchronisation_on_cuda():
    """CUDA's sync debug mode raises on every synchronising call."""
    # the default debug=None: labels on the device are not checked
    model = build(sampler='ddim', num_steps=2, eta=0.5, debug=None).cuda()
    model.init_weights()
    train_inputs, train_samples = batch(model, True)
    test_inputs, test_samples = batch(model, False)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode('error')
    try:
        model.train()
        losses = model.loss(train_inputs, train_samples)
        sum(losses.values()).backward()
        model.eval()
        with torch.no_grad():
            feats = model.extract_feat(test_inputs)
            probs = model.e2e_probs(test_inputs,
                                    [s.metainfo for s in test_samples])
            model.decode_head.predict(feats, probs, test_inputs.shape[-2:],
                                      model.test_cfg)
    finally:
        torch.cuda.set_sync_debug_mode('default')
