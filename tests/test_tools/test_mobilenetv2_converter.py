# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""torchvision MobileNetV2 -> MMSeg MobileNetV2: keys, shapes, numerics.

torchvision is not a dependency, so its ``MobileNetV2.features`` forward
is re-implemented here with ``torch.nn.functional`` from the state dict.
The real ImageNet weights of ``../shared`` are used when present; else a
random state dict in torchvision's key layout, built from the
architecture table.
"""
import importlib.util
import os.path as osp
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from mmseg.models.backbones import MobileNetV2

from mmseg_resensemble.utils.mobilenetv2_converter import (
    convert_mobilenetv2, convert_mobilenetv2_key, torchvision_block_index)

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SHARED_WEIGHTS = osp.join(REPO, '..', 'shared', 'weights',
                          'mobilenet_v2-b0353104.pth')
TOOL = osp.join(REPO, 'tools', 'model_converters',
                'mobilenetv2_torchvision2mmseg.py')
# torchvision's inverted_residual_setting: t, c, n, s
TV_SETTING = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2],
              [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]]
BN_KEYS = ('weight', 'bias', 'running_mean', 'running_var',
           'num_batches_tracked')
# MMSeg's layer{i + 1} ends at torchvision's features[:LAYER_END[i]]
LAYER_END = [2, 4, 7, 11, 14, 17, 18]


def tv_blocks():
    """(in, out, stride, expand_ratio) of features.1 .. features.17."""
    blocks, cin = [], 32
    for t, c, n, s in TV_SETTING:
        for i in range(n):
            blocks.append((cin, c, s if i == 0 else 1, t))
            cin = c
    return blocks


def random_tv_state_dict(seed=0):
    """A state dict with torchvision MobileNetV2's keys and shapes."""
    g = torch.Generator().manual_seed(seed)
    sd = OrderedDict()

    def conv(prefix, cout, cin, k, groups=1):
        fan_in = cin // groups * k * k
        sd[prefix + 'weight'] = torch.randn(
            cout, cin // groups, k, k, generator=g) * (2. / fan_in)**0.5

    def bn(prefix, c):
        sd[prefix + 'weight'] = 1 + 0.1 * torch.randn(c, generator=g)
        sd[prefix + 'bias'] = 0.1 * torch.randn(c, generator=g)
        sd[prefix + 'running_mean'] = 0.1 * torch.randn(c, generator=g)
        sd[prefix + 'running_var'] = 0.5 + torch.rand(c, generator=g)
        sd[prefix + 'num_batches_tracked'] = torch.tensor(100)

    conv('features.0.0.', 32, 3, 3)
    bn('features.0.1.', 32)
    for i, (cin, cout, _, t) in enumerate(tv_blocks(), start=1):
        p, hidden = f'features.{i}.conv.', cin * t
        if t == 1:
            conv(p + '0.0.', hidden, hidden, 3, groups=hidden)
            bn(p + '0.1.', hidden)
            conv(p + '1.', cout, hidden, 1)
            bn(p + '2.', cout)
        else:
            conv(p + '0.0.', hidden, cin, 1)
            bn(p + '0.1.', hidden)
            conv(p + '1.0.', hidden, hidden, 3, groups=hidden)
            bn(p + '1.1.', hidden)
            conv(p + '2.', cout, hidden, 1)
            bn(p + '3.', cout)
    conv('features.18.0.', 1280, 320, 1)
    bn('features.18.1.', 1280)
    sd['classifier.1.weight'] = 0.01 * torch.randn(1000, 1280, generator=g)
    sd['classifier.1.bias'] = torch.zeros(1000)
    return sd


def tv_features(sd, x, end=18):
    """torchvision's ``MobileNetV2.features[:end](x)`` in eval mode."""

    def cbr(prefix, x, stride=1, groups=1, act=True, bn_prefix=None):
        w = sd[prefix + 'weight']
        x = F.conv2d(
            x, w, stride=stride, padding=(w.shape[-1] - 1) // 2, groups=groups)
        b = bn_prefix
        x = F.batch_norm(
            x,
            sd[b + 'running_mean'],
            sd[b + 'running_var'],
            sd[b + 'weight'],
            sd[b + 'bias'],
            training=False,
            eps=1e-5)
        return F.relu6(x) if act else x

    x = cbr('features.0.0.', x, stride=2, bn_prefix='features.0.1.')
    for i, (cin, cout, stride, t) in enumerate(tv_blocks(), start=1):
        if i >= end:
            return x
        p, hidden = f'features.{i}.conv.', cin * t
        h = x
        if t != 1:
            h = cbr(p + '0.0.', h, bn_prefix=p + '0.1.')
            dw, proj, proj_bn = p + '1.0.', p + '2.', p + '3.'
        else:
            dw, proj, proj_bn = p + '0.0.', p + '1.', p + '2.'
        h = cbr(
            dw,
            h,
            stride=stride,
            groups=hidden,
            bn_prefix=dw[:-2] + str(int(dw[-2]) + 1) + '.')
        h = cbr(proj, h, act=False, bn_prefix=proj_bn)
        x = x + h if stride == 1 and cin == cout else h
    if end > 18:
        x = cbr('features.18.0.', x, bn_prefix='features.18.1.')
    return x


def source_state_dict():
    """The ImageNet weights of ../shared when present, else random ones
    in the same layout."""
    if osp.isfile(SHARED_WEIGHTS):
        return torch.load(SHARED_WEIGHTS, map_location='cpu')
    return random_tv_state_dict()


@pytest.fixture(scope='module')
def tv_state():
    return source_state_dict()


def test_reference_layout_matches_the_shared_file():
    """The architecture table of this test is torchvision's layout."""
    if not osp.isfile(SHARED_WEIGHTS):
        pytest.skip('no ../shared weights to compare the table with; the '
                    'random-weights path of the other tests still runs')
    real = torch.load(SHARED_WEIGHTS, map_location='cpu')
    fake = random_tv_state_dict()
    assert list(real) == list(fake)
    for k in real:
        assert real[k].shape == fake[k].shape, k


def test_key_mapping_examples():
    assert convert_mobilenetv2_key('features.0.0.weight') == \
        'conv1.conv.weight'
    assert convert_mobilenetv2_key('features.0.1.running_var') == \
        'conv1.bn.running_var'
    # expansion ratio 1: depthwise, then projection
    assert convert_mobilenetv2_key('features.1.conv.0.0.weight') == \
        'layer1.0.conv.0.conv.weight'
    assert convert_mobilenetv2_key('features.1.conv.1.weight') == \
        'layer1.0.conv.1.conv.weight'
    assert convert_mobilenetv2_key('features.1.conv.2.bias') == \
        'layer1.0.conv.1.bn.bias'
    # expansion ratio 6
    assert convert_mobilenetv2_key('features.3.conv.1.1.weight') == \
        'layer2.1.conv.1.bn.weight'
    assert convert_mobilenetv2_key('features.10.conv.2.weight') == \
        'layer4.3.conv.2.conv.weight'
    assert convert_mobilenetv2_key(
        'features.17.conv.3.num_batches_tracked') == \
        'layer7.0.conv.2.bn.num_batches_tracked'
    # not in MMSeg's backbone
    assert convert_mobilenetv2_key('features.18.0.weight') == ''
    assert convert_mobilenetv2_key('classifier.1.weight') == ''
    assert torchvision_block_index()[14] == (6, 0, 6)


@pytest.mark.parametrize('key', [
    'features.19.0.weight', 'features.1.conv.3.weight',
    'features.2.conv.4.weight', 'features.0.2.weight', 'backbone.conv1.w',
    'features.5.conv.0.0.scale'
])
def test_bad_keys_raise(key):
    with pytest.raises(ValueError, match='features|MobileNetV2'):
        convert_mobilenetv2_key(key)


def test_empty_or_head_only_raises():
    with pytest.raises(ValueError, match='no torchvision MobileNetV2'):
        convert_mobilenetv2({'classifier.1.weight': torch.zeros(2, 2)})


@pytest.mark.parametrize('use_random', [False, True])
def test_keys_and_shapes_load_strict(use_random, tv_state):
    src = random_tv_state_dict() if use_random else tv_state
    converted = convert_mobilenetv2(src)
    dropped = [
        k for k in src
        if k.startswith('features.18.') or k.startswith('classifier.')
    ]
    assert len(dropped) == 8
    assert len(converted) == len(src) - len(dropped) == 306
    # one-to-one: every backbone tensor kept, none duplicated
    assert sorted(id(v) for v in converted.values()) == sorted(
        id(src[k]) for k in src if k not in dropped)
    for dilated in (False, True):
        kwargs = dict(
            strides=(1, 2, 2, 1, 1, 1, 1), dilations=(1, 1, 1, 2, 2, 4,
                                                      4)) if dilated else {}
        backbone = MobileNetV2(widen_factor=1., **kwargs)
        own = backbone.state_dict()
        assert set(own) == set(converted)
        for k, v in converted.items():
            assert own[k].shape == v.shape, k
        result = backbone.load_state_dict(converted, strict=True)
        assert not result.missing_keys and not result.unexpected_keys


@pytest.mark.parametrize('use_random', [False, True])
def test_forward_matches_torchvision_reference(use_random, tv_state):
    src = random_tv_state_dict(seed=1) if use_random else tv_state
    src64 = {
        k: v.double() if v.is_floating_point() else v
        for k, v in src.items()
    }
    backbone = MobileNetV2(widen_factor=1., out_indices=(1, 2, 4, 6))
    backbone.load_state_dict(convert_mobilenetv2(src), strict=True)
    backbone.double()
    backbone.eval()  # MMSeg's MobileNetV2.train returns None
    x = torch.randn(
        2, 3, 96, 64, generator=torch.Generator().manual_seed(0)).double()
    with torch.no_grad():
        outs = backbone(x)
    assert [o.shape[1] for o in outs] == [24, 32, 96, 320]
    for out, layer in zip(outs, (1, 2, 4, 6)):
        ref = tv_features(src64, x, end=LAYER_END[layer])
        assert out.shape == ref.shape
        torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-9)
    # the reference is not trivially equal to anything: an untrained
    # backbone gives different features
    other = MobileNetV2(widen_factor=1.).double()
    other.eval()
    with torch.no_grad():
        assert not torch.allclose(other(x)[-1], outs[-1], atol=1e-3)
    # a mapping that swapped two same-shaped blocks (features.8 and
    # features.9, both in layer4) would load strictly but not match
    swapped = dict(src)
    for k in src:
        if k.startswith('features.8.'):
            k9 = 'features.9.' + k[len('features.8.'):]
            swapped[k], swapped[k9] = src[k9], src[k]
    backbone.load_state_dict(convert_mobilenetv2(swapped), strict=True)
    backbone.double()
    with torch.no_grad():
        assert not torch.allclose(backbone(x)[-1], outs[-1], atol=1e-3)
    # and the reference's final 1x1 conv (dropped by the converter) runs
    assert tv_features(src64, x, end=19).shape[1] == 1280


def test_real_weights_classify_consistently(tv_state):
    """With the ImageNet weights, float32 features match and are sane."""
    if not osp.isfile(SHARED_WEIGHTS):
        pytest.skip('needs ../shared/weights/mobilenet_v2-b0353104.pth')
    backbone = MobileNetV2(widen_factor=1., out_indices=(6, ))
    backbone.load_state_dict(convert_mobilenetv2(tv_state), strict=True)
    backbone.eval()
    x = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = backbone(x)
        ref = tv_features(tv_state, x)
    assert out.shape == (1, 320, 4, 4)
    assert (out - ref).abs().max().item() < 1e-4
    assert out.abs().mean().item() > 1e-2


def test_cli_converts_and_unwraps(tmp_path):
    spec = importlib.util.spec_from_file_location('mv2_tool', TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    src = random_tv_state_dict(seed=3)
    # a DDP-wrapped checkpoint, as some training scripts write
    wrapped = {'state_dict': {'module.' + k: v for k, v in src.items()}}
    src_path, dst_path = tmp_path / 'tv.pth', tmp_path / 'out' / 'mmseg.pth'
    torch.save(wrapped, src_path)
    tool.main([str(src_path), str(dst_path)])
    loaded = torch.load(dst_path, map_location='cpu')
    assert list(loaded) == list(convert_mobilenetv2(src))
    backbone = MobileNetV2(widen_factor=1.)
    backbone.load_state_dict(loaded, strict=True)
    torch.testing.assert_close(backbone.layer7[0].conv[2].bn.running_var,
                               src['features.17.conv.3.running_var'])
