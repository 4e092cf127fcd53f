# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""The shared base of the heads that refine the frozen E2E output."""
import logging
import math
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmseg.models.utils import resize
from mmseg.registry import MODELS
from mmseg.utils import ConfigType, SampleList
from torch import Tensor

from ..utils import labels_to_onehot, probs_to_analog

#: MMSeg ``BaseDecodeHead`` arguments without a meaning here (the denoiser
#: has its own output layer, no dropout and no pixel sampler): accepted at
#: their defaults so that a decode head's config converts, refused
#: otherwise
DECODE_HEAD_DEFAULTS = dict(
    dropout_ratio=0.1, conv_cfg=None, sampler=None, threshold=None)
#: ``input_transform`` values (as MMSeg's decode heads)
INPUT_TRANSFORMS = (None, 'resize_concat', 'multiple_select')
#: head arguments that moved into ``denoiser`` (old configs still build)
LEGACY_DENOISER_KEYS = ('num_blocks', 'dilations', 'time_embed_dims')
#: the denoiser's submodules, which older checkpoints keep on the head
LEGACY_DENOISER_MODULES = ('cond_proj', 'mask_in', 'time_mlp', 'blocks',
                           'out_norm_act', 'conv_seg')


def move_legacy_denoiser_keys(module: nn.Module, state_dict: dict, prefix: str,
                              *args) -> None:
    """A load-state-dict pre-hook: checkpoints from before the denoiser was
    a module of its own load, ``{prefix}blocks.0...`` becoming
    ``{prefix}denoiser.blocks.0...`` (the same for ``cond_proj``,
    ``mask_in``, ``time_mlp``, ``out_norm_act`` and ``conv_seg``)."""
    for key in list(state_dict):
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        if name.split('.', 1)[0] in LEGACY_DENOISER_MODULES:
            new = f'{prefix}denoiser.{name}'
            if new not in state_dict:
                state_dict[new] = state_dict.pop(key)


def stack_labels(batch_data_samples: SampleList) -> Tensor:
    """The label maps of a batch, (N, 1, H, W)."""
    return torch.stack(
        [sample.gt_sem_seg.data for sample in batch_data_samples])


def as_loss_list(losses: Union[nn.Module, nn.ModuleList, None]) -> list:
    """The losses of a ``loss_*`` argument as a list (one, several or
    none)."""
    if losses is None:
        return []
    if isinstance(losses, nn.ModuleList):
        return list(losses)
    return [losses]


def add_loss(losses: Dict[str, Tensor], name: str, value: Tensor) -> None:
    """Add ``value`` to ``losses[name]`` (losses of one ``loss_name`` add
    up, as in MMSeg's ``loss_by_feat``)."""
    losses[name] = losses[name] + value if name in losses else value


def build_losses(
    cfg: Union[dict, Sequence[dict], None]
) -> Union[nn.Module, nn.ModuleList, None]:
    """Build one loss config, or a list of them (as ``BaseDecodeHead``
    builds ``loss_decode``); None builds nothing.

    Raises:
        TypeError: Naming ``cfg`` when it is neither.
    """
    if cfg is None:
        return None
    if isinstance(cfg, dict):
        return MODELS.build(cfg)
    if isinstance(cfg, (list, tuple)):
        return nn.ModuleList([MODELS.build(c) for c in cfg])
    raise TypeError(f'a loss must be a dict or a list of dicts, got {cfg!r}')


class E2EConditionedHead(BaseModule):
    """A head whose network sees the frozen E2E learner: its features (the
    condition on I0) and its output x̂0.

    It builds the network εθ from ``denoiser`` (a registered module, see
    :class:`~mmseg_resensemble.models.denoisers.DilatedResDenoiser` for the
    interface) and holds what every such head shares: the mask encoding
    ([0, 1] -> [-s, s]), the condition at the working resolution, the
    training maps (condition, x̂0, one-hot ground truth, valid pixels) and
    MMSeg's losses of class scores against the label maps. Subclasses add
    the method: :class:`ResidualDiffusionHead` (the paper) and
    :class:`E2ERefinerHead` (a deterministic refiner).

    The contract, the same for every subclass (it is not MMSeg's decode
    head's, whose ``loss``/``predict`` see only features: these heads also
    need x̂0, which :class:`ResEnsembleSegmentor` passes)::

        loss(inputs, e2e_probs, batch_data_samples, train_cfg)
            -> dict of losses
        predict(inputs, e2e_probs, input_size, test_cfg)
            -> dict(probs=(N, K, h, w), uncertainty=(N, 1, h, w), ...)

    with ``inputs`` the frozen E2E learner's feature levels and
    ``e2e_probs`` its probabilities (N, K, H', W'). ``loss_decode`` is one
    MMSeg loss or a list of them. The arguments an MMSeg decode head's
    config carries (``in_channels``, ``channels``, ``num_classes``,
    ``in_index``, ``input_transform``, ``align_corners``, ``ignore_index``,
    ``out_channels``) mean what they mean there.

    Args:
        in_channels (int | Sequence[int]): Channels of the selected levels
            (summed for ``input_transform='resize_concat'``).
        channels (int): Width of the denoiser.
        num_classes (int): Number of classes K.
        loss_decode (dict | list[dict]): The head's loss(es).
        denoiser (dict): The network's config. ``in_channels``,
            ``channels``, ``num_classes``, ``condition_on_e2e``,
            ``norm_cfg``, ``act_cfg`` and ``align_corners`` default to the
            head's. Defaults to
            ``dict(type='DilatedResDenoiser')``.
        scale (float): s, the mask encoding range [-s, s]. Defaults to 1.0.
        working_stride (int, optional): The head works at
            ceil(H / stride) x ceil(W / stride) of the network input
            (e.g. 4 for DeepLabV3+'s decoder output). Defaults to None:
            the resolution of the selected condition features.
        condition_on_e2e (bool): Feed x̂0 to εθ. Defaults to True.
        debug (bool, optional): Check the label maps of every training
            batch, naming the files of out-of-range labels (on an
            accelerator a device-to-host synchronisation; the data
            pipeline's ``CheckImageAndLabel`` checks them once per file).
            None (default): check them when they are on the CPU, where it
            costs no synchronisation; True: always; False: never.
        in_index (int | Sequence[int]): The feature levels the condition
            reads. Defaults to -1.
        input_transform (str, optional): As MMSeg's decode heads: None
            (one level), 'resize_concat' or 'multiple_select'.
        align_corners (bool): Of every resize. Defaults to False.
        ignore_index (int): The label of unlabelled pixels. Defaults to
            255.
        out_channels (int, optional): Must be ``num_classes`` (one channel
            per class); accepted for MMSeg configs.
        norm_cfg (dict): Normalisation of the denoiser.
        act_cfg (dict): Activation of the denoiser.
        init_cfg (dict, optional): mmengine's initialisation config.
        **kwargs: ``BaseDecodeHead`` arguments at their defaults
            (:data:`DECODE_HEAD_DEFAULTS`) and the legacy denoiser
            arguments (:data:`LEGACY_DENOISER_KEYS`).
    """

    def __init__(self,
                 in_channels: Union[int, Sequence[int]],
                 channels: int,
                 num_classes: int,
                 loss_decode: ConfigType,
                 denoiser: ConfigType = dict(type='DilatedResDenoiser'),
                 scale: float = 1.0,
                 working_stride: Optional[int] = None,
                 condition_on_e2e: bool = True,
                 debug: Optional[bool] = None,
                 in_index: Union[int, Sequence[int]] = -1,
                 input_transform: Optional[str] = None,
                 align_corners: bool = False,
                 ignore_index: int = 255,
                 out_channels: Optional[int] = None,
                 norm_cfg: ConfigType = dict(type='ParallelGN', num_groups=8),
                 act_cfg: ConfigType = dict(type='SiLU'),
                 init_cfg=None,
                 **kwargs) -> None:
        denoiser = dict(denoiser)
        legacy = {
            k: kwargs.pop(k)
            for k in LEGACY_DENOISER_KEYS if k in kwargs
        }
        if legacy:
            print_log(
                f'{type(self).__name__}: {sorted(legacy)} are arguments of '
                'the denoiser now; put them in decode_head.denoiser',
                logger='current',
                level=logging.WARNING)
            denoiser.update(legacy)
        for key, value in kwargs.items():
            if key not in DECODE_HEAD_DEFAULTS:
                raise TypeError(f'{type(self).__name__} got an unexpected '
                                f'argument {key!r}')
            if value != DECODE_HEAD_DEFAULTS[key]:
                raise ValueError(
                    f'{type(self).__name__}: {key}={value!r} has no meaning '
                    'here (the denoiser has its own output layer); leave it '
                    f'out or at {DECODE_HEAD_DEFAULTS[key]!r}')
        super().__init__(init_cfg=init_cfg)
        if input_transform not in INPUT_TRANSFORMS:
            raise ValueError(f'input_transform must be one of '
                             f'{INPUT_TRANSFORMS}, got {input_transform!r}')
        if input_transform is not None and not (isinstance(
                in_channels, (list, tuple)) and isinstance(
                    in_index,
                    (list, tuple)) and len(in_channels) == len(in_index)):
            raise ValueError(
                f'input_transform={input_transform!r} needs in_channels and '
                'in_index as lists of one length, got '
                f'in_channels={in_channels!r}, in_index={in_index!r}')
        if input_transform is None and not (isinstance(in_channels, int)
                                            and isinstance(in_index, int)):
            raise ValueError(
                'one feature level (input_transform=None) needs int '
                f'in_channels and in_index, got in_channels={in_channels!r}, '
                f'in_index={in_index!r}')
        self.input_transform = input_transform
        self.in_index = in_index
        self.in_channels = (
            sum(in_channels)
            if input_transform == 'resize_concat' else in_channels)
        self.channels = channels
        self.num_classes = num_classes
        self.out_channels = num_classes if out_channels is None else (
            out_channels)
        self.align_corners = align_corners
        self.ignore_index = ignore_index
        self.norm_cfg = norm_cfg
        self.act_cfg = act_cfg
        self.loss_decode = build_losses(loss_decode)
        if scale <= 0:
            raise ValueError(f'scale must be > 0, got {scale}')
        if working_stride is not None and working_stride < 1:
            raise ValueError(
                f'working_stride must be >= 1, got {working_stride}')
        if self.out_channels != self.num_classes:
            raise ValueError(
                f'{type(self).__name__} predicts one channel per class: '
                f'out_channels={self.out_channels} must equal '
                f'num_classes={self.num_classes}')
        self.scale = float(scale)
        self.working_stride = working_stride
        self.condition_on_e2e = condition_on_e2e
        self.debug = None if debug is None else bool(debug)
        for key, value in dict(
                in_channels=self.in_channels,
                channels=self.channels,
                num_classes=self.num_classes,
                condition_on_e2e=condition_on_e2e,
                norm_cfg=self.norm_cfg,
                act_cfg=self.act_cfg,
                align_corners=self.align_corners).items():
            denoiser.setdefault(key, value)
        self.denoiser = MODELS.build(denoiser)
        self.register_load_state_dict_pre_hook(move_legacy_denoiser_keys)

    # ------------------------------------------------------------------
    # the contract (:class:`ResEnsembleSegmentor` calls these two)
    # ------------------------------------------------------------------
    def loss(self, inputs: List[Tensor], e2e_probs: Tensor,
             batch_data_samples: SampleList,
             train_cfg: Optional[ConfigType]) -> Dict[str, Tensor]:
        """The training losses.

        Args:
            inputs (list[Tensor]): The frozen E2E learner's feature levels,
                each (N, Ci, hi, wi).
            e2e_probs (Tensor): Its probabilities (N, K, H', W').
            batch_data_samples (list[SegDataSample]): With ``gt_sem_seg``.
            train_cfg (dict, optional): The segmentor's ``train_cfg``.

        Returns:
            dict[str, Tensor]: The losses, by ``loss_name``.
        """
        raise NotImplementedError

    def predict(self, inputs: List[Tensor], e2e_probs: Tensor,
                input_size: Sequence[int],
                test_cfg: ConfigType) -> Dict[str, Tensor]:
        """The prediction.

        Args:
            inputs (list[Tensor]): As :meth:`loss`.
            e2e_probs (Tensor): As :meth:`loss`.
            input_size (Sequence[int]): The network input size (H, W).
            test_cfg (dict): The segmentor's ``test_cfg``.

        Returns:
            dict[str, Tensor]: ``probs`` (N, K, h, w), normalised over the
            classes, and ``uncertainty`` (N, 1, h, w); heads may add more.
        """
        raise NotImplementedError

    # ------------------------------------------------------------------
    # the network
    # ------------------------------------------------------------------
    def condition_levels(self, inputs: List[Tensor]) -> List[Tensor]:
        """The E2E feature levels ``in_index`` selects, each at its own
        resolution (the denoiser resizes them, see
        :meth:`DilatedResDenoiser.encode_condition`)."""
        if isinstance(self.in_index, (list, tuple)):
            return [inputs[i] for i in self.in_index]
        return [inputs[self.in_index]]

    def encode_condition(self, inputs: List[Tensor],
                         input_size: Sequence[int]) -> Tensor:
        """The condition on I0, once per image (Eq. 19): the selected E2E
        feature levels through the denoiser's ``encode_condition``,
        resized to the working resolution (ceil(H / s) x ceil(W / s) for
        ``working_stride`` s, else the first level's).

        Args:
            inputs (list[Tensor]): Multi-level features, each (N, Ci, hi,
                wi).
            input_size (Sequence[int]): Network input size (H, W).

        Returns:
            Tensor: Condition of shape (N, C, h, w).
        """
        cond = self.denoiser.encode_condition(self.condition_levels(inputs))
        if self.working_stride is not None:
            size = tuple(
                math.ceil(s / self.working_stride) for s in input_size)
            if tuple(cond.shape[-2:]) != size:
                cond = resize(
                    cond,
                    size=size,
                    mode='bilinear',
                    align_corners=self.align_corners)
        return cond

    def forward(self, cond: Tensor, x_hat: Tensor, x_t: Tensor,
                t: Tensor) -> Tensor:
        """εθ(x̄t, I0, t): the denoiser on (N, K, h, w) maps, steps (N,)."""
        return self.denoiser(cond, x_hat, x_t, t)

    # ------------------------------------------------------------------
    # the maps
    # ------------------------------------------------------------------
    def encode_e2e(self, e2e_probs: Tensor, size: Sequence[int]) -> Tensor:
        """x̂0: E2E probabilities (N, K, H', W') -> (N, K, h, w) in [-s, s].
        """
        if e2e_probs.shape[1] != self.num_classes:
            raise ValueError(
                f'the E2E learner gives {e2e_probs.shape[1]} classes, '
                f'the head has num_classes={self.num_classes}')
        if tuple(e2e_probs.shape[-2:]) != tuple(size):
            e2e_probs = resize(
                e2e_probs,
                size=tuple(size),
                mode='bilinear',
                align_corners=self.align_corners)
        return probs_to_analog(e2e_probs.float(), self.scale)

    def training_maps(self, inputs: List[Tensor], e2e_probs: Tensor,
                      batch_data_samples: SampleList) -> Tuple[Tensor, ...]:
        """Condition, x̂0 and ground truth at the working resolution.

        Returns:
            tuple[Tensor]: ``cond`` (N, C, h, w), ``x_hat`` (N, K, h, w) in
            [-s, s], the one-hot ground truth ``onehot`` (N, K, h, w) in
            [0, 1] and the labelled-pixel mask ``valid`` (N, 1, h, w).
        """
        seg_label = stack_labels(batch_data_samples)
        cond = self.encode_condition(inputs, seg_label.shape[-2:])
        size = cond.shape[-2:]
        x_hat = self.encode_e2e(e2e_probs, size)
        try:
            onehot, valid = labels_to_onehot(
                seg_label,
                self.num_classes,
                self.ignore_index,
                size,
                check=(seg_label.device.type == 'cpu'
                       if self.debug is None else self.debug))
        except ValueError as e:
            files = [
                sample.metainfo.get('seg_map_path', f'sample {i}')
                for i, (
                    sample,
                    label) in enumerate(zip(batch_data_samples, seg_label))
                if ((label != self.ignore_index)
                    & ((label < 0) | (label >= self.num_classes))).any()
            ]
            raise ValueError(
                f'{e}. Label maps with such values: {files}') from e
        return cond, x_hat, onehot, valid

    def task_losses(
            self, seg_logits: Tensor, batch_data_samples: SampleList,
            losses: Union[nn.Module, nn.ModuleList]) -> Dict[str, Tensor]:
        """MMSeg losses of class scores against the label maps, as
        ``BaseDecodeHead.loss_by_feat``: the scores are resized to the
        labels' size and each loss is called with the labels (N, H, W) and
        ``ignore_index``; losses of one ``loss_name`` add up.

        Args:
            seg_logits (Tensor): Class scores (N, K, h, w) whose softmax is
                the prediction.
            batch_data_samples (list[SegDataSample]): With
                ``gt_sem_seg``.
            losses (nn.Module | nn.ModuleList): Built MMSeg losses.

        Returns:
            dict[str, Tensor]: One entry per ``loss_name``.
        """
        seg_label = stack_labels(batch_data_samples)
        if tuple(seg_logits.shape[-2:]) != tuple(seg_label.shape[-2:]):
            seg_logits = resize(
                seg_logits,
                size=seg_label.shape[2:],
                mode='bilinear',
                align_corners=self.align_corners)
        seg_label = seg_label.squeeze(1)
        out: Dict[str, Tensor] = {}
        for loss in as_loss_list(losses):
            add_loss(
                out, loss.loss_name,
                loss(
                    seg_logits.float(),
                    seg_label,
                    ignore_index=self.ignore_index))
        return out

    def check_test_cfg(self, test_cfg: ConfigType) -> None:
        """Raise ``ValueError`` naming a bad setting of ``test_cfg``; the
        segmentor calls it once, when it is built. Nothing to check here.
        """
