# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""torchvision MobileNetV2 weights -> MMSeg's ``MobileNetV2`` backbone.

torchvision's ``MobileNetV2.features`` is a flat ``Sequential``: the stem
(``features.0``: conv, BN), 17 inverted residual blocks (``features.1`` to
``features.17``) and a final 1x1 conv to 1280 channels (``features.18``);
``classifier.1`` is the ImageNet classifier. MMSeg's backbone names the
stem ``conv1`` and groups the blocks into ``layer1`` .. ``layer7`` as in
the paper's table; it has neither the final 1x1 conv nor the classifier,
which are dropped. Inside a block, torchvision's
``conv.{0,1}.{0,1}`` (conv, BN of a ``Conv2dNormActivation``) and the
bare projection ``conv.{2,3}`` (``conv.{1,2}`` when the expansion ratio
is 1) become ``ConvModule``'s ``conv.<i>.conv`` / ``conv.<i>.bn``.
"""
import re
from collections import OrderedDict
from typing import Dict, List, Tuple

from torch import Tensor

# (expand_ratio, channels, num_blocks) of each layer, as the paper's table,
# torchvision's ``inverted_residual_setting`` and MMSeg's ``arch_settings``
MOBILENETV2_ARCH = ((1, 16, 1), (6, 24, 2), (6, 32, 3), (6, 64, 4), (6, 96, 3),
                    (6, 160, 3), (6, 320, 1))
# torchvision's ``features`` index of the final 1x1 conv (not in MMSeg)
LAST_CONV_INDEX = 1 + sum(n for _, _, n in MOBILENETV2_ARCH)


def torchvision_block_index() -> Dict[int, Tuple[int, int, int]]:
    """Where each torchvision inverted residual block goes in MMSeg.

    Returns:
        dict[int, tuple[int, int, int]]: ``features`` index (1..17) ->
        (MMSeg layer number 1..7, block index in the layer, expansion
        ratio).
    """
    table = {}
    index = 1
    for layer, (expand_ratio, _, num_blocks) in enumerate(MOBILENETV2_ARCH):
        for block in range(num_blocks):
            table[index] = (layer + 1, block, expand_ratio)
            index += 1
    return table


_BLOCK_INDEX = torchvision_block_index()


def _block_module_map(expand_ratio: int) -> List[Tuple[str, str]]:
    """torchvision -> MMSeg prefixes inside one block's ``conv``."""
    if expand_ratio == 1:
        # depthwise conv-BN-ReLU6, then the linear projection conv, BN
        return [('conv.0.0.', 'conv.0.conv.'), ('conv.0.1.', 'conv.0.bn.'),
                ('conv.1.', 'conv.1.conv.'), ('conv.2.', 'conv.1.bn.')]
    # expansion conv-BN-ReLU6, depthwise conv-BN-ReLU6, projection conv, BN
    return [('conv.0.0.', 'conv.0.conv.'), ('conv.0.1.', 'conv.0.bn.'),
            ('conv.1.0.', 'conv.1.conv.'), ('conv.1.1.', 'conv.1.bn.'),
            ('conv.2.', 'conv.2.conv.'), ('conv.3.', 'conv.2.bn.')]


_FEATURE_KEY = re.compile(r'^features\.(\d+)\.(.+)$')
_PARAM_NAMES = ('weight', 'bias', 'running_mean', 'running_var',
                'num_batches_tracked')


def convert_mobilenetv2_key(key: str) -> str:
    """The MMSeg backbone key of one torchvision MobileNetV2 key.

    Args:
        key (str): A key of torchvision's ``MobileNetV2.state_dict()``,
            e.g. ``'features.2.conv.1.0.weight'``.

    Returns:
        str: The MMSeg ``MobileNetV2`` key, e.g.
        ``'layer2.0.conv.1.conv.weight'``, or ``''`` for the keys MMSeg's
        backbone does not have (``features.18`` and ``classifier``).

    Raises:
        ValueError: If ``key`` is not a torchvision MobileNetV2 key.
    """
    if key.startswith('classifier.'):
        return ''
    match = _FEATURE_KEY.match(key)
    if match is None:
        raise ValueError(f'{key!r} is not a torchvision MobileNetV2 key '
                         "(expected 'features.<i>.*' or 'classifier.*')")
    index, rest = int(match.group(1)), match.group(2)
    if index == LAST_CONV_INDEX:
        return ''
    if index == 0:
        mapping = [('0.', 'conv1.conv.'), ('1.', 'conv1.bn.')]
        prefix = ''
    elif index in _BLOCK_INDEX:
        layer, block, expand_ratio = _BLOCK_INDEX[index]
        mapping = _block_module_map(expand_ratio)
        prefix = f'layer{layer}.{block}.'
    else:
        raise ValueError(f'{key!r}: torchvision MobileNetV2 has features.0 '
                         f'to features.{LAST_CONV_INDEX}, not '
                         f'features.{index}')
    for src, dst in mapping:
        if rest.startswith(src) and rest[len(src):] in _PARAM_NAMES:
            return prefix + dst + rest[len(src):]
    raise ValueError(f'{key!r} is not a torchvision MobileNetV2 key: no '
                     f'module of features.{index} is named {rest!r}')


def convert_mobilenetv2(state_dict: Dict[str, Tensor]) -> 'OrderedDict':
    """Convert torchvision MobileNetV2 weights to MMSeg's backbone.

    The result loads with ``strict=True`` into
    ``mmseg.models.backbones.MobileNetV2`` of the same width (any
    ``strides``/``dilations``/``out_indices``); at the default strides and
    no dilation, the backbone's last stage then computes torchvision's
    ``features[:18]``.

    Args:
        state_dict (dict[str, Tensor]): torchvision's
            ``MobileNetV2.state_dict()`` (``features.*``,
            ``classifier.*``), without a ``'module.'`` prefix.

    Returns:
        OrderedDict[str, Tensor]: The backbone's weights, keys without a
        ``'backbone.'`` prefix (as ``init_cfg=dict(type='Pretrained',
        checkpoint=...)`` of the backbone expects).

    Raises:
        ValueError: If a key is not torchvision MobileNetV2's, or if the
            state dict holds no backbone weights.
    """
    converted = OrderedDict()
    for key, value in state_dict.items():
        new_key = convert_mobilenetv2_key(key)
        if new_key:
            converted[new_key] = value
    if not converted:
        raise ValueError('the state dict holds no torchvision MobileNetV2 '
                         f'backbone weights (keys: {list(state_dict)[:5]})')
    return converted
