# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""ResEnsemble-DDPM: a frozen E2E segmentor ensembled with a residual DDPM."""
import copy
import logging
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.structures import PixelData
from mmseg.models.decode_heads import Mask2FormerHead, MaskFormerHead
from mmseg.models.segmentors.base import BaseSegmentor
from mmseg.models.utils import resize
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg.utils import (ConfigType, OptConfigType, OptMultiConfig,
                         OptSampleList, SampleList, add_prefix)
from torch import Tensor

from ..decode_heads import TEST_CFG_DEFAULTS
from ..utils.e2e_learner import (check_e2e_type, e2e_test_mode, feature_levels,
                                 is_absent_file, load_e2e_checkpoint,
                                 load_e2e_config, merge_data_preprocessor,
                                 resolve_in_channels)

# heads whose predict() gives class-probability x mask-probability scores
MASK_CLASSIFICATION_HEADS = (MaskFormerHead, Mask2FormerHead)
#: every key ``test_cfg`` may have (a misspelt one would be ignored): the
#: inference mode (``mode`` and ``crop_size``/``stride`` default to the E2E
#: learner's own test mode) and the head's sampling keys
TEST_CFG_KEYS = ('mode', 'crop_size', 'stride') + tuple(TEST_CFG_DEFAULTS)


@MODELS.register_module()
class ResEnsembleSegmentor(BaseSegmentor):
    """ResEnsemble-DDPM (Shi, Dong et al. 2023) as an MMSeg segmentor.

    A trained end-to-end segmentor (the *E2E learner*) stays frozen: eval
    mode at all times, no gradients, absent from the optimizer. Its
    backbone (and neck) features condition the diffusion learner
    (``decode_head``, a :class:`ResidualDiffusionHead`) and are computed
    once per image. Training (Algorithm 1) takes x̂0 from the data sample's
    ``e2e_probs`` when the E2E cache provides it, otherwise from the E2E
    decode head on the augmented batch. Inference (Algorithm 2) samples x̄0
    and predicts ½(x̄0 + x̂0) (Eq. 15).

    Each output :class:`SegDataSample` holds the ensemble's
    ``seg_logits`` (log-probabilities) and ``pred_sem_seg``, and beside
    them the E2E learner's own ``e2e_seg_logits`` and ``e2e_pred_sem_seg``
    and the per-pixel ``uncertainty`` across ``num_samples`` samples.

    Args:
        e2e (str | dict): The E2E learner: an MMSeg config file whose
            ``model`` is used (``mmseg::`` model-zoo configs included) or a
            model dict. ``EncoderDecoder``, ``CascadeEncoderDecoder`` and
            their subclasses are supported (others raise ``TypeError``).
        decode_head (dict): The diffusion learner's config.
            ``in_channels='auto'`` takes the channels of the E2E feature
            levels ``in_index`` from one probe of the E2E learner at build
            time; with ``in_index=None`` too, the levels are the highest-
            and the lowest-resolution ones (see
            :func:`~mmseg_resensemble.models.utils.e2e_learner.auto_levels`).
        e2e_checkpoint (str, optional): Weights of the E2E learner (local
            path or URL), loaded at build time. A trained ResEnsemble
            checkpoint holds them too: where the local file does not exist
            (a shared model, the E2E file left behind) the model builds
            with a warning and takes the E2E weights from the whole-model
            checkpoint (``init_model``, ``MMSegInferencer``,
            ``tools/test.py``, ``load_from``); training without them is
            refused (:meth:`check_e2e_loaded`).
        e2e_strict (bool): Raise on missing or unexpected E2E checkpoint
            keys (shape mismatches always raise). Defaults to True.
        allow_random_e2e (bool): Allow training without ``e2e_checkpoint``
            (and without ``load_from`` or a resumed checkpoint), i.e. on a
            randomly initialised frozen E2E learner, which
            :class:`ResEnsembleSanityCheckHook` refuses otherwise. For
            tests only. Defaults to False.
        train_cfg (dict, optional): The head's training keys
            (``timesteps``, ``self_aligned``; see
            :meth:`ResidualDiffusionHead.training_settings`); missing ones
            are Algorithm 1's.
        test_cfg (dict, optional): ``mode`` ('whole' | 'slide', with
            ``crop_size`` and ``stride``), ``sampler`` ('ddpm' runs all T
            steps as the paper; 'ddim' is the fast path), ``num_steps``,
            ``eta``, ``num_samples``, ``seed``, ``clip_denoised``,
            ``start_step`` and ``ensemble_weight``. Missing sampler keys
            take the head's defaults, the paper's
            (:data:`~mmseg_resensemble.models.decode_heads.TEST_CFG_DEFAULTS`);
            checked once, here. Without ``mode`` the E2E config's
            own test mode is used (its ``crop_size``/``stride`` for
            'slide'), so that ``e2e_mIoU`` is the E2E learner's own.
        data_preprocessor (dict, optional): Defaults to the E2E learner's;
            a dict without ``type`` (e.g. ``dict(size=(180, 240))``)
            updates the E2E learner's.
        pretrained (str, optional): Must be None (accepted because MMSeg's
            ``init_model`` sets it); use ``e2e_checkpoint``.
        init_cfg (dict, optional): Initialisation config.
    """

    def __init__(self,
                 e2e: Union[str, dict],
                 decode_head: ConfigType,
                 e2e_checkpoint: Optional[str] = None,
                 e2e_strict: bool = True,
                 allow_random_e2e: bool = False,
                 train_cfg: OptConfigType = None,
                 test_cfg: OptConfigType = None,
                 data_preprocessor: OptConfigType = None,
                 pretrained: Optional[str] = None,
                 init_cfg: OptMultiConfig = None) -> None:
        if pretrained is not None:
            raise ValueError(
                f'pretrained={pretrained!r}: ResEnsembleSegmentor takes the '
                'E2E learner\'s weights from e2e_checkpoint')
        e2e_cfg = load_e2e_config(e2e)
        check_e2e_type(e2e_cfg)
        super().__init__(
            data_preprocessor=merge_data_preprocessor(e2e_cfg,
                                                      data_preprocessor),
            init_cfg=init_cfg)
        e2e_cfg.pop('pretrained', None)
        self.e2e = MODELS.build(e2e_cfg)
        self.e2e_checkpoint = e2e_checkpoint
        # loaded now from e2e_checkpoint, or later with the whole model
        # (load_from, --resume, tools/test.py, init_model, the inferencer)
        self.e2e_weights_loaded = False
        if e2e_checkpoint is not None and is_absent_file(e2e_checkpoint):
            # a shared trained model: its checkpoint holds the E2E weights
            print_log(
                f'e2e_checkpoint {e2e_checkpoint!r} does not exist: the E2E '
                'learner\'s weights must come from a checkpoint of the whole '
                'model (init_model, MMSegInferencer, tools/test.py, '
                'load_from); training refuses to start otherwise',
                logger='current',
                level=logging.WARNING)
        elif e2e_checkpoint is not None:
            load_e2e_checkpoint(self.e2e, e2e_checkpoint, strict=e2e_strict)
            self.e2e_weights_loaded = True
        if not isinstance(allow_random_e2e, bool):
            raise ValueError(
                f'allow_random_e2e must be a bool, got {allow_random_e2e!r}')
        self.allow_random_e2e = allow_random_e2e
        self.e2e.register_load_state_dict_pre_hook(self._note_e2e_loaded)
        self.e2e.requires_grad_(False)
        self.e2e.eval()

        if decode_head.get('in_channels') == 'auto':
            decode_head = resolve_in_channels(decode_head, self.e2e)
        self.decode_head = MODELS.build(decode_head)
        self.align_corners = self.decode_head.align_corners
        self.num_classes = self.decode_head.num_classes
        self.out_channels = self.decode_head.out_channels
        if self.e2e_num_classes != self.num_classes:
            raise ValueError(
                f'class counts disagree: the E2E learner has '
                f'num_classes={self.e2e_num_classes}, decode_head has '
                f'num_classes={self.num_classes}')
        self.train_cfg = train_cfg
        self.test_cfg = dict()
        if 'mode' not in (test_cfg or {}):
            self.test_cfg.update(e2e_test_mode(e2e_cfg))
        self.test_cfg.update(test_cfg or {})
        self._check_test_cfg()
        # the head reads and checks its training keys once, here
        settings = getattr(self.decode_head, 'training_settings', None)
        self.head_train_cfg = (
            settings(train_cfg, self.test_cfg) if settings else train_cfg)

    # ------------------------------------------------------------------
    # the frozen E2E learner
    # ------------------------------------------------------------------
    @property
    def e2e_num_classes(self) -> int:
        return self.e2e.num_classes

    def _note_e2e_loaded(self, module: nn.Module, state_dict: dict,
                         prefix: str, *args) -> None:
        if any(k.startswith(prefix) for k in state_dict):
            self.e2e_weights_loaded = True

    def check_e2e_loaded(self) -> None:
        """Refuse to train on a randomly initialised E2E learner.

        Raises:
            ValueError: Unless ``e2e_checkpoint`` or a checkpoint of the
                whole model loaded the E2E weights, or ``allow_random_e2e``.
        """
        if not (self.e2e_weights_loaded or self.allow_random_e2e):
            source = ('model.e2e_checkpoint=None' if self.e2e_checkpoint
                      is None else f'model.e2e_checkpoint='
                      f'{self.e2e_checkpoint!r} does not exist')
            raise ValueError(
                "the frozen E2E learner's weights were never loaded "
                f'({source}, and no load_from or resumed '
                'checkpoint held them): the diffusion learner would learn '
                'the residual of a random E2E learner. Set '
                "model.e2e_checkpoint to the E2E learner's trained weights; "
                'model.allow_random_e2e=True trains anyway (for tests)')

    def _check_test_cfg(self) -> None:
        unknown = sorted(set(self.test_cfg) - set(TEST_CFG_KEYS))
        if unknown:
            raise ValueError(f'unknown test_cfg key(s) {unknown}; the valid '
                             f'keys are {sorted(TEST_CFG_KEYS)}')
        mode = self.test_cfg.get('mode')
        if mode not in ('whole', 'slide'):
            raise ValueError(
                f"test_cfg.mode={mode!r} is not one of ['slide', 'whole']")
        if mode == 'slide':
            for key in ('crop_size', 'stride'):
                if key not in self.test_cfg:
                    raise ValueError(f"test_cfg.mode='slide' needs {key}")
        self.decode_head.check_test_cfg(self.test_cfg)

    def train(self, mode: bool = True) -> 'ResEnsembleSegmentor':
        """Train the diffusion learner; the E2E learner stays in eval."""
        super().train(mode)
        self.e2e.eval()
        return self

    def init_weights(self) -> None:
        """Initialise the diffusion learner only: the E2E learner keeps
        the weights of ``e2e_checkpoint``."""
        self.decode_head.init_weights()

    @property
    def e2e_last_head(self) -> nn.Module:
        """The E2E decode head that gives the output (a cascade's last)."""
        heads = self.e2e.decode_head
        return heads[-1] if isinstance(heads, nn.ModuleList) else heads

    @torch.no_grad()
    def e2e_features(self, inputs: Tensor) -> Union[Tensor, List[Tensor]]:
        """The E2E learner's backbone (and neck) output of (N, 3, H, W),
        as its decode head takes it (one tensor for PIDNet, DDRNet)."""
        return self.e2e.extract_feat(inputs)

    def extract_feat(self, inputs: Tensor) -> List[Tensor]:
        """Frozen E2E backbone (and neck) features of (N, 3, H, W): a list
        of levels (N, Ci, hi, wi); a backbone that returns one tensor
        gives one level."""
        return feature_levels(self.e2e_features(inputs))

    @torch.no_grad()
    def e2e_seg_logits(
            self,
            inputs: Tensor,
            batch_img_metas: List[dict],
            feats: Optional[Union[Tensor, List[Tensor]]] = None) -> Tensor:
        """The E2E learner's output on one window, through each head's own
        inference path, as ``EncoderDecoder.encode_decode`` and
        ``CascadeEncoderDecoder.encode_decode``: the decode head's
        ``predict`` (a cascade: ``forward`` of the first heads, ``predict``
        of the last) with the E2E learner's ``test_cfg``.

        Args:
            inputs (Tensor): (N, 3, H, W).
            batch_img_metas (list[dict]): Their metainfo; as in MMSeg, its
                ``img_shape`` (a ``torch.Size`` in a slide window) or
                ``pad_shape`` is the output size.
            feats (Tensor | list[Tensor], optional): :meth:`e2e_features`
                of ``inputs``, reused when given.

        Returns:
            Tensor: (N, C, H, W): logits, or for mask-classification heads
            (MaskFormer, Mask2Former) class-probability x mask-probability
            scores.
        """
        if feats is None:
            feats = self.e2e_features(inputs)
        # MaskFormerHead.predict writes into the metainfo
        metas = copy.deepcopy(batch_img_metas)
        heads, test_cfg = self.e2e.decode_head, self.e2e.test_cfg
        if isinstance(heads, nn.ModuleList):  # CascadeEncoderDecoder
            out = heads[0].forward(feats)
            for head in heads[1:-1]:
                out = head.forward(feats, out)
            return heads[-1].predict(feats, out, metas, test_cfg)
        return heads.predict(feats, metas, test_cfg)

    def seg_logits_to_probs(self, seg_logits: Tensor) -> Tensor:
        """The E2E output (N, C, H, W) -> class probabilities (N, K, H, W).

        Logits give their softmax; one sigmoid channel (C = 1) the two
        channels [1 − p, p]; the scores of a mask-classification head
        (MaskFormer, Mask2Former: class probability x mask probability,
        summed over queries) are normalised over classes. Each keeps the
        E2E learner's own arg-max.
        """
        seg_logits = seg_logits.float()
        if isinstance(self.e2e_last_head, MASK_CLASSIFICATION_HEADS):
            scores = seg_logits.clamp(min=0)
            return scores / scores.sum(
                1, keepdim=True).clamp(min=torch.finfo(scores.dtype).tiny)
        if seg_logits.shape[1] == 1:
            p = seg_logits.sigmoid()
            return torch.cat([1 - p, p], dim=1)
        return seg_logits.softmax(dim=1)

    @torch.no_grad()
    def e2e_probs(
            self,
            inputs: Tensor,
            batch_img_metas: List[dict],
            feats: Optional[Union[Tensor, List[Tensor]]] = None,
            return_logits: bool = False
    ) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        """x̂0: the E2E learner's class probabilities of ``inputs``.

        The one place that computes x̂0 (training, prediction, the E2E
        cache):
        :meth:`e2e_seg_logits` turned into probabilities by
        :meth:`seg_logits_to_probs`. With ``feats``, on those features
        (one window); without, in the E2E learner's own test mode (its
        ``test_cfg``: whole, or slide with the outputs averaged over the
        windows before the conversion, as ``EncoderDecoder.inference``).

        Args:
            inputs (Tensor): (N, 3, H, W).
            batch_img_metas (list[dict]): Their metainfo.
            feats (Tensor | list[Tensor], optional): :meth:`e2e_features`
                of ``inputs``.
            return_logits (bool): Also return the E2E output they come from
                (:meth:`e2e_seg_logits`, (N, C, H, W)).

        Returns:
            Tensor | tuple[Tensor, Tensor]: (N, K, H, W), summing to 1 over
            the K classes (and the output, with ``return_logits``).
        """
        e2e_test_cfg = self.e2e.test_cfg or {}
        if feats is None and e2e_test_cfg.get('mode', 'whole') == 'slide':
            seg_logits = self.slide_maps(
                inputs, batch_img_metas, lambda crop, metas: dict(
                    seg_logits=self.e2e_seg_logits(crop, metas)),
                e2e_test_cfg)['seg_logits']
        else:
            seg_logits = self.e2e_seg_logits(inputs, batch_img_metas, feats)
        probs = self.seg_logits_to_probs(seg_logits)
        return (probs, seg_logits) if return_logits else probs

    @staticmethod
    def cached_probs(data_samples: OptSampleList,
                     size: torch.Size) -> Optional[Tensor]:
        """x̂0 from the E2E cache, when every sample carries ``e2e_probs``.

        The maps are padded at the bottom and right, as the data
        preprocessor pads the images, to (N, K, H, W) of ``size``.
        """
        if not data_samples or not all('e2e_probs' in ds
                                       for ds in data_samples):
            return None
        maps = []
        for ds in data_samples:
            probs = ds.e2e_probs.data.float()
            h, w = probs.shape[-2:]
            if h > size[0] or w > size[1]:
                raise ValueError(
                    f'cached E2E map of {ds.metainfo.get("img_path")} is '
                    f'{h}x{w}, larger than the input {tuple(size)}')
            maps.append(F.pad(probs, (0, size[1] - w, 0, size[0] - h)))
        return torch.stack(maps)

    # ------------------------------------------------------------------
    # training
    # ------------------------------------------------------------------
    def loss(self, inputs: Tensor, data_samples: SampleList) -> dict:
        """Algorithm 1 on a batch: (N, 3, H, W) images with ground truth."""
        feats = self.e2e_features(inputs)
        e2e_probs = self.cached_probs(data_samples, inputs.shape[-2:])
        if e2e_probs is None:
            e2e_probs = self.e2e_probs(inputs,
                                       [ds.metainfo for ds in data_samples],
                                       feats)
        losses = self.decode_head.loss(
            feature_levels(feats), e2e_probs, data_samples,
            self.head_train_cfg)
        return add_prefix(losses, 'decode')

    # ------------------------------------------------------------------
    # inference
    # ------------------------------------------------------------------
    def infer_maps(self, inputs: Tensor,
                   batch_img_metas: List[dict]) -> Dict[str, Tensor]:
        """Both learners on (N, 3, H, W) inputs (one window), maps at
        (H, W).

        Returns:
            dict[str, Tensor]: ``probs`` (N, K, H, W), the ensemble;
            ``e2e_logits`` (N, C, H, W), the E2E learner's output
            (:meth:`e2e_seg_logits`); ``uncertainty`` (N, 1, H, W).
        """
        feats = self.e2e_features(inputs)
        probs, logits = self.e2e_probs(
            inputs, batch_img_metas, feats, return_logits=True)
        out = self.decode_head.predict(
            feature_levels(feats), probs, inputs.shape[-2:], self.test_cfg)
        size = inputs.shape[-2:]
        maps = {
            k:
            resize(
                v,
                size=size,
                mode='bilinear',
                align_corners=self.align_corners)
            for k, v in out.items()
        }
        # as the E2E learner resizes its own logits
        maps['e2e_logits'] = resize(
            logits,
            size=size,
            mode='bilinear',
            align_corners=self.e2e.align_corners)
        return maps

    def slide_maps(self, inputs: Tensor, batch_img_metas: List[dict],
                   maps_fn: Callable[[Tensor, List[dict]], Dict[str, Tensor]],
                   test_cfg: ConfigType) -> Dict[str, Tensor]:
        """``maps_fn`` over overlapping crops, each map averaged.

        As ``EncoderDecoder.slide_inference``: a crop larger than the image
        is clipped to the image, and each crop's metainfo has the crop's
        ``img_shape`` (a ``torch.Size``), and its ``pad_shape`` too (which
        ``Mask2FormerHead`` reads).

        Args:
            inputs (Tensor): (N, 3, H, W).
            batch_img_metas (list[dict]): Their metainfo.
            maps_fn (Callable): (crop, crop metainfo) -> dict of maps
                (N, *, h, w) at the crop's size, e.g. :meth:`infer_maps`.
            test_cfg (dict): With ``crop_size`` and ``stride``.

        Returns:
            dict[str, Tensor]: The averaged maps at (H, W).
        """
        h_stride, w_stride = test_cfg['stride']
        h_crop, w_crop = test_cfg['crop_size']
        _, _, h_img, w_img = inputs.size()
        h_grids = max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1
        w_grids = max(w_img - w_crop + w_stride - 1, 0) // w_stride + 1
        sums: Dict[str, Tensor] = {}
        count = inputs.new_zeros((1, 1, h_img, w_img))
        for h_idx in range(h_grids):
            for w_idx in range(w_grids):
                y2 = min(h_idx * h_stride + h_crop, h_img)
                x2 = min(w_idx * w_stride + w_crop, w_img)
                y1, x1 = max(y2 - h_crop, 0), max(x2 - w_crop, 0)
                crop_img = inputs[:, :, y1:y2, x1:x2]
                crop_metas = [
                    dict(
                        meta,
                        img_shape=crop_img.shape[2:],
                        pad_shape=crop_img.shape[2:])
                    for meta in batch_img_metas
                ]
                crop = maps_fn(crop_img, crop_metas)
                pad = (x1, w_img - x2, y1, h_img - y2)
                for k, v in crop.items():
                    sums[k] = sums.get(k, 0) + F.pad(v, pad)
                count[:, :, y1:y2, x1:x2] += 1
        assert (count > 0).all()
        return {k: v / count for k, v in sums.items()}

    def inference(self, inputs: Tensor,
                  batch_img_metas: List[dict]) -> Dict[str, Tensor]:
        """Whole or slide inference, per ``test_cfg.mode``."""
        if self.test_cfg['mode'] == 'slide':
            return self.slide_maps(inputs, batch_img_metas, self.infer_maps,
                                   self.test_cfg)
        return self.infer_maps(inputs, batch_img_metas)

    @staticmethod
    def default_img_metas(inputs: Tensor) -> List[dict]:
        """Metainfo of (N, 3, H, W) inputs without data samples: no
        padding, the original size is the input's."""
        size = inputs.shape[2:]
        return [
            dict(
                ori_shape=size,
                img_shape=size,
                pad_shape=size,
                padding_size=[0, 0, 0, 0]) for _ in range(inputs.shape[0])
        ]

    def encode_decode(self, inputs: Tensor,
                      batch_img_metas: List[dict]) -> Tensor:
        """Ensemble log-probabilities (N, K, H, W) of (N, 3, H, W) inputs."""
        probs = self.inference(
            inputs, batch_img_metas or self.default_img_metas(inputs))['probs']
        return probs.clamp(min=1e-6).log()

    def predict(self,
                inputs: Tensor,
                data_samples: OptSampleList = None) -> SampleList:
        """Algorithm 2 and Eq. 15, with MMSeg's post-processing.

        Returns:
            list[SegDataSample]: ``seg_logits`` (ensemble log-probabilities)
            and ``pred_sem_seg`` as MMSeg's segmentors, plus
            ``e2e_seg_logits``, ``e2e_pred_sem_seg`` and ``uncertainty``.
        """
        if data_samples is not None:
            batch_img_metas = [ds.metainfo for ds in data_samples]
        else:
            batch_img_metas = self.default_img_metas(inputs)
        maps = self.inference(inputs, batch_img_metas)
        # MMSeg's post-processing (padding, flip, resize to the original
        # size) of the ensemble and, in the same call, of the uncertainty
        # (one channel alone would go through a sigmoid)
        log_probs = maps['probs'].clamp(min=1e-6).log()
        results = self.postprocess_result(
            torch.cat([log_probs, maps['uncertainty']], dim=1), data_samples)
        # the E2E learner's maps through its own post-processing (its
        # align_corners; a sigmoid and its threshold for one channel)
        e2e = self.e2e.postprocess_result(maps['e2e_logits'],
                                          self.metainfo_copies(data_samples))
        k = log_probs.shape[1]
        for result, e2e_result in zip(results, e2e):
            seg_logits, uncertainty = result.seg_logits.data.split([k, 1])
            result.set_data(
                dict(
                    seg_logits=PixelData(data=seg_logits),
                    pred_sem_seg=PixelData(
                        data=seg_logits.argmax(dim=0, keepdim=True)),
                    e2e_seg_logits=e2e_result.seg_logits,
                    e2e_pred_sem_seg=e2e_result.pred_sem_seg,
                    uncertainty=PixelData(data=uncertainty)))
        return results

    @staticmethod
    def metainfo_copies(data_samples: OptSampleList) -> OptSampleList:
        """Fresh data samples with the metainfo of ``data_samples`` (None
        stays None: MMSeg's post-processing then keeps the input size)."""
        if data_samples is None:
            return None
        return [SegDataSample(metainfo=ds.metainfo) for ds in data_samples]

    def _forward(self,
                 inputs: Tensor,
                 data_samples: OptSampleList = None) -> Tensor:
        """Tensor mode: ensemble log-probabilities (N, K, H, W)."""
        return self.encode_decode(inputs, [])
