# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""Every sampling setting of ``test_cfg`` is checked when the model is
built, misspelt keys included."""
import pytest
from mmseg.registry import MODELS

import mmseg_resensemble  # noqa: F401
from mmseg_resensemble.models.segmentors.resensemble_segmentor import \
    TEST_CFG_KEYS
from tests.tiny_models import fcn_e2e, head_cfg


def build(test_cfg):
    return MODELS.build(
        dict(
            type='ResEnsembleSegmentor',
            e2e=fcn_e2e(),
            decode_head=head_cfg(),
            test_cfg=test_cfg))


def test_misspelt_key_lists_the_valid_ones():
    with pytest.raises(ValueError) as info:
        build(dict(sampler='ddim', num_steps=2, num_sample=4))
    message = str(info.value)
    assert "unknown test_cfg key(s) ['num_sample']" in message
    assert all(repr(k) in message for k in TEST_CFG_KEYS)


@pytest.mark.parametrize('key, value, match', [
    ('eta', 5, r'test_cfg.eta must be a number in \[0, 1\], got 5'),
    ('eta', -0.1, 'test_cfg.eta'),
    ('eta', 'zero', 'test_cfg.eta'),
    ('eta', True, 'test_cfg.eta'),
    ('seed', 'abc', "test_cfg.seed must be an int or None, got 'abc'"),
    ('seed', 1.5, 'test_cfg.seed'),
    ('clip_denoised', 'maybe',
     "test_cfg.clip_denoised must be a bool or None, got 'maybe'"),
    ('clip_denoised', 1, 'test_cfg.clip_denoised'),
    ('num_samples', True, 'test_cfg.num_samples'),
])
def test_bad_sampler_setting_is_refused_at_build(key, value, match):
    with pytest.raises(ValueError, match=match):
        build({'sampler': 'ddim', 'num_steps': 2, key: value})


@pytest.mark.parametrize('settings', [
    dict(eta=0),
    dict(eta=1.0),
    dict(seed=None),
    dict(seed=3),
    dict(clip_denoised=None),
    dict(clip_denoised=False),
    dict(mode='slide', crop_size=(16, 16), stride=(8, 8))
])
def test_good_settings_build(settings):
    model = build(dict(sampler='ddim', num_steps=2, **settings))
    for key, value in settings.items():
        assert model.test_cfg[key] == value
