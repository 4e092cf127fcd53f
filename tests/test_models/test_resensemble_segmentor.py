# Copyright (c) mmseg-resensemble contributors. All rights reserved.
import copy

import pytest
import torch
from mmengine.optim import build_optim_wrapper
from mmengine.structures import PixelData
from mmseg.models import SegTTAModel
from mmseg.registry import MODELS

import mmseg_resensemble  # noqa: F401
from tests.tiny_models import K, fcn_e2e, head_cfg, make_batch, ocr_e2e


def build_model(e2e=None, test_cfg=None, **kwargs):
    model = MODELS.build(
        dict(
            type='ResEnsembleSegmentor',
            e2e=e2e or fcn_e2e(),
            decode_head=kwargs.pop('decode_head', head_cfg()),
            test_cfg=test_cfg or dict(sampler='ddim', num_steps=2),
            **kwargs))
    model.init_weights()
    return model


def e2e_state(model):
    return {k: v.clone() for k, v in model.e2e.state_dict().items()}


@pytest.mark.parametrize('e2e_fn', [fcn_e2e, ocr_e2e])
def test_loss_and_predict(e2e_fn):
    model = build_model(e2e_fn())
    data = model.data_preprocessor(make_batch(), True)
    losses = model(**data, mode='loss')
    assert set(losses) == {'decode.loss_diffusion'}
    assert torch.isfinite(losses['decode.loss_diffusion'])
    model.eval()
    data = model.data_preprocessor(make_batch(), False)
    results = model(**data, mode='predict')
    assert len(results) == 2
    for result in results:
        assert result.seg_logits.data.shape == (K, 24, 32)
        assert result.pred_sem_seg.shape == (24, 32)
        assert result.e2e_seg_logits.data.shape == (K, 24, 32)
        assert result.e2e_pred_sem_seg.shape == (24, 32)
        assert result.uncertainty.shape == (24, 32)
        probs = result.seg_logits.data.softmax(0)
        torch.testing.assert_close(
            probs.sum(0), torch.ones(24, 32), atol=1e-5, rtol=0)


def test_e2e_prediction_matches_standalone_e2e():
    model = build_model()
    model.eval()
    data = model.data_preprocessor(make_batch(), False)
    ours = model(**data, mode='predict')
    theirs = model.e2e.predict(data['inputs'],
                               copy.deepcopy(data['data_samples']))
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a.e2e_seg_logits.data, b.seg_logits.data)
        assert torch.equal(a.e2e_pred_sem_seg.data, b.pred_sem_seg.data)


def test_e2e_stays_frozen_through_training():
    model = build_model()
    before = e2e_state(model)
    optim_wrapper = build_optim_wrapper(
        model,
        dict(
            constructor='TrainableParamsOptimWrapperConstructor',
            optimizer=dict(type='SGD', lr=0.1, momentum=0.9)))
    optim_params = {
        id(p)
        for g in optim_wrapper.optimizer.param_groups
        for p in g['params']
    }
    assert not any(id(p) in optim_params for p in model.e2e.parameters())
    assert all(id(p) in optim_params for p in model.decode_head.parameters())
    head_before = copy.deepcopy(model.decode_head.state_dict())
    model.train()
    assert not model.e2e.training
    assert all(not m.training for m in model.e2e.modules())
    assert all(not p.requires_grad for p in model.e2e.parameters())
    for seed in range(3):
        model.train_step(make_batch(seed=seed), optim_wrapper)
    after = e2e_state(model)
    for k in before:
        assert torch.equal(before[k], after[k]), k
    assert any(not torch.equal(v,
                               model.decode_head.state_dict()[k])
               for k, v in head_before.items())


def test_slide_inference_and_crop_larger_than_image():
    model = build_model(
        test_cfg=dict(
            mode='slide',
            crop_size=(16, 16),
            stride=(8, 12),
            sampler='ddim',
            num_steps=2))
    model.eval()
    data = model.data_preprocessor(make_batch(n=1), False)
    result = model(**data, mode='predict')[0]
    assert result.pred_sem_seg.shape == (24, 32)
    big = build_model(
        test_cfg=dict(
            mode='slide',
            crop_size=(64, 64),
            stride=(32, 32),
            sampler='ddim',
            num_steps=2))
    big.load_state_dict(model.state_dict())
    big.eval()
    whole = build_model(
        test_cfg=dict(mode='whole', sampler='ddim', num_steps=2))
    whole.load_state_dict(model.state_dict())
    whole.eval()
    a = big(**data, mode='predict')[0]
    b = whole(**data, mode='predict')[0]
    torch.testing.assert_close(a.seg_logits.data, b.seg_logits.data)


def test_tensor_mode():
    model = build_model()
    model.eval()
    data = model.data_preprocessor(make_batch(), False)
    out = model(data['inputs'], mode='tensor')
    assert out.shape == (2, K, 24, 32)


def test_predict_without_data_samples():
    model = build_model()
    model.eval()
    data = model.data_preprocessor(make_batch(), False)
    results = model.predict(data['inputs'])
    assert results[0].pred_sem_seg.shape == (24, 32)


def test_seg_tta_model():
    model = build_model()
    model.eval()
    tta = SegTTAModel(module=model)
    batch = make_batch(n=1)
    flipped = copy.deepcopy(batch)
    flipped['inputs'] = [x.flip(-1) for x in flipped['inputs']]
    for ds in flipped['data_samples']:
        ds.set_metainfo(dict(flip=True, flip_direction='horizontal'))
    data = dict(
        inputs=[batch['inputs'], flipped['inputs']],
        data_samples=[batch['data_samples'], flipped['data_samples']])
    results = tta.test_step(data)
    assert results[0].pred_sem_seg.shape == (24, 32)


def test_binary_task_with_sigmoid_e2e():
    e2e = fcn_e2e(num_classes=2, auxiliary=False)
    e2e['decode_head'].update(out_channels=1, threshold=0.5)
    model = build_model(e2e, decode_head=head_cfg(num_classes=2))
    data = model.data_preprocessor(make_batch(num_classes=2), True)
    assert torch.isfinite(model(**data, mode='loss')['decode.loss_diffusion'])
    model.eval()
    data = model.data_preprocessor(make_batch(num_classes=2), False)
    result = model(**data, mode='predict')[0]
    assert result.seg_logits.data.shape == (2, 24, 32)
    assert set(result.pred_sem_seg.data.unique().tolist()) <= {0, 1}


def test_bad_class_counts():
    with pytest.raises(ValueError, match='num_classes=3.*num_classes=4'):
        build_model(decode_head=head_cfg(num_classes=4))


def test_cached_e2e_output_skips_e2e_decoder():
    model = build_model()
    calls = []
    # predict() calls the head's forward directly: hook its classifier
    model.e2e.decode_head.conv_seg.register_forward_hook(
        lambda *args: calls.append(1))
    batch = make_batch()
    for ds in batch['data_samples']:
        ds.e2e_probs = PixelData(data=torch.softmax(torch.randn(K, 24, 32), 0))
    data = model.data_preprocessor(batch, True)
    model(**data, mode='loss')
    assert calls == []
    del batch['data_samples'][0].e2e_probs
    model(**model.data_preprocessor(batch, True), mode='loss')
    assert calls == [1]


def test_e2e_checkpoint_loading(tmp_path):
    source = MODELS.build(fcn_e2e())
    path = str(tmp_path / 'e2e.pth')
    torch.save(dict(state_dict=source.state_dict()), path)
    model = build_model(e2e_checkpoint=path)
    for k, v in source.state_dict().items():
        assert torch.equal(v, model.e2e.state_dict()[k]), k
    # a config file path as the E2E learner
    cfg_path = tmp_path / 'e2e_config.py'
    cfg_path.write_text(f'model = {fcn_e2e()!r}\n')
    model = build_model(str(cfg_path), e2e_checkpoint=path)
    assert torch.equal(model.e2e.state_dict()['backbone.conv1.conv.weight'],
                       source.state_dict()['backbone.conv1.conv.weight'])


def test_absent_e2e_checkpoint_defers_to_the_whole_model(tmp_path):
    """A shared trained model: the config names an E2E file the receiver
    does not have; the whole-model checkpoint brings the E2E weights."""
    trained = build_model(e2e_checkpoint=None, allow_random_e2e=True)
    absent = str(tmp_path / 'nowhere.pth')
    model = build_model(e2e_checkpoint=absent)
    assert not model.e2e_weights_loaded
    with pytest.raises(ValueError, match='nowhere.pth.*does not exist'):
        model.check_e2e_loaded()
    model.load_state_dict(trained.state_dict())
    assert model.e2e_weights_loaded
    model.check_e2e_loaded()
    for k, v in trained.e2e.state_dict().items():
        assert torch.equal(v, model.e2e.state_dict()[k]), k
    # a checkpoint without E2E weights does not count
    model = build_model(e2e_checkpoint=absent)
    model.load_state_dict(
        {
            k: v
            for k, v in trained.state_dict().items()
            if k.startswith('decode_head.')
        },
        strict=False)
    assert not model.e2e_weights_loaded


def test_e2e_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='missing_config.py'):
        build_model(str(tmp_path / 'missing_config.py'))
    other = MODELS.build(fcn_e2e(num_classes=5))
    path = str(tmp_path / 'other.pth')
    torch.save(other.state_dict(), path)
    with pytest.raises(ValueError, match='shape mismatch'):
        build_model(e2e_checkpoint=path)
    partial = {
        k: v
        for k, v in MODELS.build(fcn_e2e()).state_dict().items()
        if not k.startswith('auxiliary_head')
    }
    torch.save(partial, path)
    with pytest.raises(ValueError, match='missing keys'):
        build_model(e2e_checkpoint=path)
    build_model(e2e_checkpoint=path, e2e_strict=False)
    (tmp_path / 'garbage.pth').write_bytes(b'not a checkpoint')
    with pytest.raises(ValueError, match='could not be read'):
        build_model(e2e_checkpoint=str(tmp_path / 'garbage.pth'))


@pytest.mark.parametrize('test_cfg,match', [
    (dict(mode='tiles'), 'mode'),
    (dict(mode='slide', crop_size=(8, 8)), 'stride'),
    (dict(num_samples=0), 'num_samples'),
    (dict(sampler='euler'), 'ddim'),
    (dict(num_steps=0), 'num_steps'),
    (dict(num_steps=21), 'num_steps'),
    (dict(sampler='ddpm', num_steps=5), 'ddim'),
])
def test_bad_test_cfg(test_cfg, match):
    with pytest.raises(ValueError, match=match):
        build_model(test_cfg=test_cfg)


def test_sigmoid_e2e_prediction_uses_the_heads_threshold():
    """One sigmoid channel: x̂0 is [1 − p, p] and e2e_pred_sem_seg is
    p > threshold (MMSeg's default 0.3), as the E2E learner's own."""
    e2e = fcn_e2e(num_classes=2, auxiliary=False)
    e2e['decode_head'].update(out_channels=1)
    model = build_model(e2e, decode_head=head_cfg(num_classes=2))
    assert model.e2e.decode_head.threshold == 0.3
    # p around 0.4: between MMSeg's threshold and 0.5
    torch.nn.init.constant_(model.e2e.decode_head.conv_seg.bias, -0.4)
    model.eval()
    data = model.data_preprocessor(make_batch(num_classes=2), False)
    ours = model(**copy.deepcopy(data), mode='predict')
    theirs = model.e2e.predict(data['inputs'],
                               copy.deepcopy(data['data_samples']))
    with torch.no_grad():
        probs = model.e2e_probs(data['inputs'],
                                [ds.metainfo for ds in data['data_samples']])
    for i, (a, b) in enumerate(zip(ours, theirs)):
        p = b.seg_logits.data  # MMSeg stores the sigmoid
        assert ((p > 0.3) & (p <= 0.5)).any()
        assert torch.equal(a.e2e_pred_sem_seg.data, b.pred_sem_seg.data.long())
        torch.testing.assert_close(a.e2e_seg_logits.data, p)
        torch.testing.assert_close(probs[i], torch.cat([1 - p, p]))


def test_partial_data_preprocessor_updates_the_e2e_learners():
    model = build_model(data_preprocessor=dict(size=(180, 240)))
    assert model.data_preprocessor.size == (180, 240)
    assert model.data_preprocessor.mean.flatten().tolist() == pytest.approx(
        fcn_e2e()['data_preprocessor']['mean'])
    assert model.data_preprocessor.channel_conversion  # bgr_to_rgb kept
    # a dict with a type replaces it
    model = build_model(
        data_preprocessor=dict(type='SegDataPreProcessor', size=(8, 8)))
    assert model.data_preprocessor.size == (8, 8)
    assert not model.data_preprocessor._enable_normalize
    e2e = fcn_e2e()
    del e2e['data_preprocessor']
    with pytest.raises(ValueError, match='no `type`'):
        build_model(e2e, data_preprocessor=dict(size=(180, 240)))


def test_unsupported_e2e_learner_type():
    # SAN: a BaseSegmentor with a text encoder, no EncoderDecoder
    with pytest.raises(
            TypeError, match='MultimodalEncoderDecoder.*EncoderDecoder'):
        build_model('mmseg::san/san-vit-b16_coco-stuff164k-640x640.py')
    with pytest.raises(TypeError, match='SegTTAModel'):
        build_model(dict(type='SegTTAModel', module=fcn_e2e()))


def test_test_mode_defaults_to_the_e2e_learners():
    e2e = fcn_e2e()
    e2e['test_cfg'] = dict(mode='slide', crop_size=(16, 16), stride=(8, 12))
    model = build_model(e2e, test_cfg=dict(sampler='ddim', num_steps=2))
    assert model.test_cfg['mode'] == 'slide'
    assert model.test_cfg['crop_size'] == (16, 16)
    assert model.test_cfg['stride'] == (8, 12)
    assert model.test_cfg['num_steps'] == 2
    # the ResEnsemble config's own mode wins
    model = build_model(
        e2e, test_cfg=dict(mode='whole', sampler='ddim', num_steps=2))
    assert model.test_cfg['mode'] == 'whole'
    assert 'crop_size' not in model.test_cfg
    # an E2E config without a test_cfg is tested whole
    del e2e['test_cfg']
    assert build_model(e2e).test_cfg['mode'] == 'whole'


def test_auto_in_channels():
    # the finest (stride 4, 8 channels) and the coarsest (stride 8, 80)
    # of MobileNetV2's levels (8, 8, 24, 80 channels at strides 4, 8, 8, 8)
    model = build_model(
        decode_head=head_cfg(in_channels='auto', in_index=None))
    assert model.decode_head.in_index == [0, 3]
    assert model.decode_head.in_channels == 8 + 80
    model = build_model(decode_head=head_cfg(in_channels='auto'))
    assert model.decode_head.in_index == [1, 3]
    assert model.decode_head.in_channels == 8 + 80
    data = model.data_preprocessor(make_batch(), True)
    assert torch.isfinite(model(**data, mode='loss')['decode.loss_diffusion'])
    # one level without an input transform: BaseDecodeHead's ints
    model = build_model(
        decode_head=head_cfg(
            in_channels='auto', in_index=2, input_transform=None))
    assert model.decode_head.in_index == 2
    assert model.decode_head.in_channels == 24
    assert torch.isfinite(model(**data, mode='loss')['decode.loss_diffusion'])
    with pytest.raises(ValueError, match=r'in_index=\(1, 4\) is out of range'):
        build_model(decode_head=head_cfg(in_channels='auto', in_index=(1, 4)))
