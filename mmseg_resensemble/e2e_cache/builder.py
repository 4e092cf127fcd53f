# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""Build the E2E output cache (Algorithm 1: x̂0 = E2E(I0) needs no gradient
and can be cached)."""
import atexit
import contextlib
import copy
import logging
import os
import os.path as osp
import time
from typing import Any, Dict, Iterator, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.dataset import Compose
from mmengine.dist import (all_reduce, barrier, broadcast_object_list,
                           get_dist_info)
from mmengine.logging import print_log
from mmengine.runner import load_checkpoint
from mmengine.utils import ProgressBar
from torch import Tensor

from ..datasets.dataset_utils import base_datasets, find_transforms
from ..models.segmentors import ResEnsembleSegmentor
from ..utils.checkpoint_checks import REVISE_KEYS
from .cache_dir import config_type_name
from .fingerprint import (changed_fields, fingerprint_digest,
                          fingerprint_fields, out_of_fold_fields)
from .store import E2ECacheError, E2ECacheStore
from .transforms import LoadE2ECache

__all__ = ['E2ECacheBuilder']


class E2ECacheBuilder:
    """Compute x̂0 = E2E(I0) of every training image and store it.

    :meth:`build` runs the frozen E2E learner of a ``ResEnsembleSegmentor``
    in test mode (``model.e2e.test_cfg``: whole or slide) over every image
    of the training set, through a test pipeline, with the segmentor's
    :meth:`~ResEnsembleSegmentor.e2e_probs` (the method that gives x̂0 on
    the fly too), and stores the probabilities area-averaged to the
    resolution of the finest E2E feature level (stride 4 for most zoo
    backbones) in ``cache_dir`` (see :mod:`mmseg_resensemble.e2e_cache.store`).
    ``LoadE2ECache`` and ``PackResEnsembleInputs`` in the train pipeline
    then feed them to the segmentor, which skips the E2E decode head.

    A cache whose fingerprint matches (E2E config, architecture, weights
    and checkpoint bytes, data preprocessor, test pipeline, classes and
    storage format; see :mod:`mmseg_resensemble.e2e_cache.fingerprint`) is
    reused: every entry is checked and only missing, invalid or stale ones
    are computed, so a killed build resumes. A cache with another
    fingerprint is rebuilt, and the log says which fields changed. Each
    rank computes every ``world_size``-th image; the ranks then wait for
    each other. From :meth:`build` to :meth:`release`, rank 0 is registered
    as a user of the cache (``cache_dir/users/``); a build with another
    fingerprint is refused, naming that run, instead of rebuilding the
    cache under it.

    :class:`~mmseg_resensemble.e2e_cache.hook.E2ECacheHook` is its adapter
    to mmengine's runner, with the same arguments; messages name the hook,
    the component a config sets.

    Args:
        cache_dir (str): The cache directory, the ``cache_dir`` of the
            train pipeline's ``LoadE2ECache``.
        pipeline (list[dict], optional): The test pipeline that loads an
            image for the E2E learner. None takes the config's
            ``test_dataloader`` (else ``val_dataloader``) pipeline without
            its annotation loading.
        topk (int, optional): Store only the k most probable classes per
            pixel. None stores all.
        compress (bool): zlib-compress the entries. Defaults to True.
        rebuild (bool): Recompute every entry even if the cache is valid.
            Defaults to False.
        out_of_fold (list[dict], optional): One ``dict(checkpoint=...,
            held_out=...)`` per fold: the weights of an E2E learner of the
            same config trained without the fold's images, and those images
            (a file with one name a line, or a list of names; a name is the
            image path relative to the image folder without its suffix).
            Each training image must be held out by exactly one fold, whose
            learner computes its entry (header ``learner='fold{i}'``, else
            ``'e2e'``). None: the model's E2E learner computes every entry.
    """

    def __init__(self,
                 cache_dir: str,
                 *,
                 pipeline: Optional[List[dict]] = None,
                 topk: Optional[int] = None,
                 compress: bool = True,
                 rebuild: bool = False,
                 out_of_fold: Optional[List[dict]] = None) -> None:
        if not isinstance(cache_dir, str) or not cache_dir:
            raise ValueError(
                'cache_dir must be a non-empty str (the cache_dir of the '
                f"train pipeline's LoadE2ECache), got {cache_dir!r}")
        if topk is not None and (not isinstance(topk, int) or topk < 1):
            raise ValueError(f'topk must be an int >= 1 or None, got {topk!r}')
        if pipeline is not None and not isinstance(pipeline, (list, tuple)):
            raise ValueError('pipeline must be a list of transform dicts, '
                             f'got {pipeline!r}')
        self.out_of_fold = self._check_folds(out_of_fold)
        self.cache_dir = cache_dir
        self.pipeline = pipeline
        self.topk = topk
        self.compress = compress
        self.rebuild = rebuild
        # the stride of the stored entries, found on the first image
        self._store_stride: Optional[float] = None
        # rank 0's registration as a user of the cache
        self._user_file: Optional[str] = None

    @property
    def user_file(self) -> Optional[str]:
        """Rank 0's registration as a user of the cache (a file in
        ``cache_dir/users/``) from :meth:`build` to :meth:`release`; None
        when not registered."""
        return self._user_file

    def build(self,
              model: nn.Module,
              dataset: Any,
              *,
              cfg: Any = None,
              run: Optional[str] = None) -> Dict[str, float]:
        """Build or complete the cache of ``dataset``'s images; every rank
        takes part.

        Args:
            model (ResEnsembleSegmentor): The (unwrapped) model.
            dataset: The training set (wrapped data sets included).
            cfg (Config, optional): The run's config: its ``model.e2e``
                enters the fingerprint and, without ``pipeline``, its test
                pipeline is the E2E learner's.
            run (str, optional): What names this run to a run refused
                because of it (e.g. its work dir).

        Returns:
            dict: ``images``, ``reused``, ``computed`` and ``repaired``
            (invalid entries replaced), summed over ranks, and ``seconds``.

        Raises:
            E2ECacheError: If another live run uses the cache with another
                fingerprint.
        """
        model = self._check_model(model)
        start = time.perf_counter()
        self._store_stride = None
        self._check_pipeline(dataset)
        samples = self._training_samples(dataset)
        if not samples:
            raise ValueError('E2ECacheHook: the training set has no images')
        pipeline_cfg = self._test_pipeline_cfg(cfg)
        pipeline = Compose(copy.deepcopy(pipeline_cfg))
        num_classes = self._num_classes(model)
        fields = self._fingerprint(model, pipeline_cfg, dataset, num_classes,
                                   cfg)
        learners = self._learners(samples)
        meta_kwargs = dict(
            digest=fingerprint_digest(fields),
            fingerprint=fields,
            num_classes=num_classes,
            topk=self.topk,
            key_root=self._key_root(dataset, samples),
            e2e_checkpoint=getattr(model, 'e2e_checkpoint', None),
            num_images=len(samples))
        store = E2ECacheStore(self.cache_dir)
        rank, world_size = get_dist_info()
        self._register(store, fields, meta_kwargs, str(run), rank)
        counts = self._fill_folds(model, store, store.read_meta(), pipeline,
                                  samples, learners, rank, world_size)
        stats = self._summarise(counts, len(samples), start)
        if rank == 0:
            self._finish(store, meta_kwargs, stats)
        barrier()
        return stats

    def release(self) -> None:
        """Stop using the cache: another E2E learner may rebuild it now."""
        if self._user_file is not None:
            E2ECacheStore.release_user(self._user_file)
            self._user_file = None

    # ------------------------------------------------------------------
    # validation
    # ------------------------------------------------------------------
    @staticmethod
    def _check_model(model: nn.Module) -> ResEnsembleSegmentor:
        """``model``, if it is a ``ResEnsembleSegmentor``."""
        if not isinstance(model, ResEnsembleSegmentor):
            raise TypeError('E2ECacheHook needs a ResEnsembleSegmentor, got '
                            f'{type(model).__name__}')
        return model

    def _num_classes(self, model: ResEnsembleSegmentor) -> int:
        """K, the channels of x̂0 (2 for a one-channel binary learner),
        checked against ``topk``."""
        num_classes = 2 if model.e2e.num_classes == 1 else int(
            model.e2e.num_classes)
        if self.topk is not None and self.topk >= num_classes:
            raise ValueError(f'topk={self.topk} must be < num_classes='
                             f'{num_classes}; use topk=None')
        return num_classes

    def _check_pipeline(self, dataset: Any) -> None:
        """Check the cache directory against the ``LoadE2ECache``
        transforms of the train pipeline (read, never rewritten)."""
        transforms = [t for _, t in find_transforms(dataset, LoadE2ECache)]
        for t in transforms:
            if osp.abspath(t.cache_dir) != osp.abspath(self.cache_dir):
                raise ValueError(
                    f'E2ECacheHook(cache_dir={self.cache_dir!r}) and the '
                    "train pipeline's LoadE2ECache(cache_dir="
                    f'{t.cache_dir!r}) disagree: give both the same '
                    'directory (one variable of the config)')
        if not transforms:
            print_log(
                'E2ECacheHook: the train pipeline has no LoadE2ECache, so '
                f'the cache built in {self.cache_dir} is not used: training '
                'computes x̂0 on the fly. Add LoadE2ECache after '
                'LoadAnnotations and PackResEnsembleInputs instead of '
                'PackSegInputs to use it.',
                logger='current',
                level=logging.WARNING)

    def _test_pipeline_cfg(self, cfg: Any) -> List[dict]:
        """The test pipeline without annotation loading."""
        if self.pipeline is not None:
            pipeline = list(self.pipeline)
        else:
            pipeline = None
            for name in ('test_dataloader', 'val_dataloader'):
                loader = cfg.get(name) if cfg is not None else None
                if loader and loader.get('dataset', {}).get('pipeline'):
                    pipeline = loader['dataset']['pipeline']
                    break
            if pipeline is None:
                raise ValueError('E2ECacheHook found no test_dataloader or '
                                 'val_dataloader pipeline; give it `pipeline`')
        out = []
        for t in pipeline:
            name = config_type_name(t)
            if name == 'TestTimeAug':
                raise ValueError(
                    'the test pipeline is a TestTimeAug: give E2ECacheHook '
                    'a single-scale `pipeline`')
            if 'Annotation' in name or name == 'LoadE2ECache':
                continue
            out.append(copy.deepcopy(t))
        return out

    @staticmethod
    def _training_samples(dataset: Any) -> List[dict]:
        """The distinct training images (their data infos), by path."""
        by_path: Dict[str, dict] = {}
        for ds in base_datasets(dataset):
            if hasattr(ds, 'full_init'):
                ds.full_init()
            for i in range(len(ds)):
                info = ds.get_data_info(i)
                by_path.setdefault(info['img_path'], info)
        return [by_path[k] for k in sorted(by_path)]

    @staticmethod
    def _key_root(dataset: Any, samples: List[dict]) -> str:
        """The training set's ``data_root`` if it holds every image, else
        the images' common folder."""
        paths = [osp.abspath(s['img_path']) for s in samples]
        roots = {
            osp.abspath(ds.data_root)
            for ds in base_datasets(dataset) if getattr(ds, 'data_root', '')
        }
        if len(roots) == 1:
            root = next(iter(roots))
            if all(p.startswith(root + os.sep) for p in paths):
                return root
        return osp.commonpath([osp.dirname(p) for p in paths])

    # ------------------------------------------------------------------
    # fingerprint and the runs using the cache
    # ------------------------------------------------------------------
    def _fingerprint(self, model: ResEnsembleSegmentor,
                     pipeline_cfg: List[dict], dataset: Any, num_classes: int,
                     cfg: Any) -> Dict[str, Any]:
        """The fingerprint fields of this build (out-of-fold learners
        included)."""
        fields = fingerprint_fields(
            model,
            pipeline_cfg,
            list(dataset.metainfo.get('classes') or []),
            num_classes,
            cfg=cfg,
            topk=self.topk)
        if self.out_of_fold is not None:
            fields['out_of_fold'] = out_of_fold_fields(self.out_of_fold)
        return fields

    def _register(self, store: E2ECacheStore, fields: Dict[str, Any],
                  meta_kwargs: dict, run: str, rank: int) -> None:
        """Rank 0: register as a user of the cache, then check its
        fingerprint (:meth:`_start`). Every rank raises if rank 0 was
        refused, so that none waits for it at the barrier."""
        refused = [None]
        if rank == 0:
            try:
                self.release()
                self._user_file = store.register_user(
                    meta_kwargs['digest'], run=run)
            except E2ECacheError as e:
                refused = [str(e)]
            else:
                atexit.register(E2ECacheStore.release_user, self._user_file)
                self._start(store, fields, meta_kwargs)
        broadcast_object_list(refused)
        if refused[0] is not None:
            raise E2ECacheError(refused[0])
        barrier()

    def _start(self, store: E2ECacheStore, fields: Dict[str, Any],
               meta_kwargs: dict) -> None:
        """Rank 0: check the fingerprint; start a new cache if stale."""
        store.remove_stale_tmp()
        try:
            old = store.read_meta()
        except E2ECacheError as e:
            old, why = None, str(e)
        if old is not None and old['digest'] == meta_kwargs['digest']:
            if self.rebuild:
                print_log(
                    f'E2E cache {store.cache_dir}: rebuild=True, '
                    'recomputing every entry',
                    logger='current')
                store.remove_entries()
            else:
                print_log(
                    f'E2E cache {store.cache_dir}: fingerprint matches '
                    f'({"complete" if old.get("complete") else "partial"}'
                    '); checking the entries and computing missing ones',
                    logger='current')
            store.write_meta(**meta_kwargs)
            return
        if old is not None:
            changed = changed_fields(old.get('fingerprint') or {}, fields)
            why = f'its fingerprint changed in: {", ".join(changed)}'
        if osp.exists(store.cache_dir):
            removed = store.remove_entries()
            print_log(
                f'E2E cache {store.cache_dir} is stale or unusable ({why}); '
                f'rebuilding it (removed {removed} old entries)',
                logger='current',
                level=logging.WARNING)
        else:
            print_log(
                f'Building a new E2E cache in {store.cache_dir}',
                logger='current')
        store.write_meta(**meta_kwargs)

    @staticmethod
    def _finish(store: E2ECacheStore, meta_kwargs: dict,
                stats: Dict[str, float]) -> None:
        """Rank 0: mark the cache complete (or not) and log the build."""
        num_images = stats['images']
        done = stats['reused'] + stats['computed']
        store.write_meta(complete=done == num_images, **meta_kwargs)
        size = store.disk_bytes()
        print_log(
            f'E2E cache {store.cache_dir} ready: {num_images} images, '
            f'{stats["reused"]} reused, {stats["computed"]} '
            f'computed ({stats["repaired"]} of them replaced '
            f'invalid entries); {size / 2**20:.1f} MiB, '
            f'{size / num_images / 1024:.1f} KiB per image',
            logger='current')

    # ------------------------------------------------------------------
    # out-of-fold learners
    # ------------------------------------------------------------------
    @staticmethod
    def _check_folds(folds: Optional[List[dict]]) -> Optional[List[dict]]:
        """Validate ``out_of_fold``; read the held-out names of each."""
        if folds is None:
            return None
        if not isinstance(folds, (list, tuple)) or not folds:
            raise ValueError('out_of_fold must be None or a non-empty list '
                             f'of dict(checkpoint, held_out), got {folds!r}')
        out = []
        for i, fold in enumerate(folds):
            if not isinstance(fold, dict) or set(fold) != {
                    'checkpoint', 'held_out'
            }:
                raise ValueError(f'out_of_fold[{i}] must be dict(checkpoint='
                                 f'..., held_out=...), got {fold!r}')
            if not osp.isfile(fold['checkpoint']):
                raise FileNotFoundError(
                    f'out_of_fold[{i}].checkpoint {fold["checkpoint"]!r} '
                    'does not exist')
            names = fold['held_out']
            if isinstance(names, str):
                with open(names, encoding='utf-8') as f:
                    names = [line.strip() for line in f if line.strip()]
            names = [str(n).replace(os.sep, '/').strip('/') for n in names]
            if not names:
                raise ValueError(f'out_of_fold[{i}] holds out no image')
            out.append(dict(checkpoint=fold['checkpoint'], held_out=names))
        return out

    def _learners(self, samples: List[dict]) -> List[int]:
        """Per training image, the fold that holds it out (-1: none, the
        model's E2E learner computes its entry)."""
        if self.out_of_fold is None:
            return [-1] * len(samples)
        by_name: Dict[str, int] = {}
        for i, fold in enumerate(self.out_of_fold):
            for name in fold['held_out']:
                if by_name.setdefault(name, i) != i:
                    raise ValueError(f'image {name!r} is held out by folds '
                                     f'{by_name[name]} and {i}')
        learners = []
        for info in samples:
            stem = osp.splitext(info['img_path'])[0].replace(os.sep, '/')
            parts = stem.split('/')
            found = {
                by_name['/'.join(parts[i:])]
                for i in range(len(parts)) if '/'.join(parts[i:]) in by_name
            }
            if len(found) != 1:
                raise ValueError(
                    f'training image {info["img_path"]} is held out by '
                    f'{len(found)} folds of out_of_fold; it must be by '
                    'exactly one')
            learners.append(found.pop())
        return learners

    @staticmethod
    @contextlib.contextmanager
    def _e2e_weights(model: ResEnsembleSegmentor,
                     checkpoint: Optional[str]) -> Iterator[None]:
        """The E2E learner with the weights of ``checkpoint`` (None: its
        own) inside the block; its own weights again after it."""
        if checkpoint is None:
            yield
            return
        own = {k: v.clone() for k, v in model.e2e.state_dict().items()}
        try:
            load_checkpoint(
                model.e2e,
                checkpoint,
                map_location='cpu',
                strict=True,
                logger='current',
                revise_keys=REVISE_KEYS)
            yield
        finally:
            model.e2e.load_state_dict(own)

    # ------------------------------------------------------------------
    # computing x̂0
    # ------------------------------------------------------------------
    def _fill_folds(self, model: ResEnsembleSegmentor, store: E2ECacheStore,
                    meta: dict, pipeline: Compose, samples: List[dict],
                    learners: List[int], rank: int,
                    world_size: int) -> Dict[str, int]:
        """This rank's share of the entries, learner by learner: the
        model's E2E learner, then each fold's with its weights swapped in.

        Returns:
            dict[str, int]: This rank's ``reused``, ``computed`` and
            ``repaired`` counts.
        """
        counts = dict(reused=0, computed=0, repaired=0)
        checkpoints = [f['checkpoint'] for f in (self.out_of_fold or [])]
        for fold, checkpoint in enumerate([None] + checkpoints):
            mine = [
                info for info, learner in zip(samples, learners)
                if learner == fold - 1
            ][rank::world_size]
            if not mine:
                continue
            name = 'e2e' if checkpoint is None else f'fold{fold - 1}'
            with self._e2e_weights(model, checkpoint):
                done = self._fill(
                    model, store, meta, pipeline, mine, rank, learner=name)
            for k in counts:
                counts[k] += done[k]
        return counts

    def _fill(self,
              model: ResEnsembleSegmentor,
              store: E2ECacheStore,
              meta: dict,
              pipeline: Compose,
              samples: List[dict],
              rank: int,
              learner: str = 'e2e') -> Dict[str, int]:
        """Check this rank's entries; compute the missing or invalid with
        the E2E learner's current weights, naming them ``learner``."""
        counts = dict(reused=0, computed=0, repaired=0)
        bar = ProgressBar(len(samples)) if rank == 0 and samples else None
        for info in samples:
            key = store.key_for(info['img_path'], meta['key_root'])
            reason = self._entry_problem(store, key, meta, info['img_path'])
            if reason is None:
                counts['reused'] += 1
            else:
                if reason != 'missing':
                    counts['repaired'] += 1
                    print_log(
                        f'E2E cache: recomputing {reason}',
                        logger='current',
                        level=logging.WARNING)
                probs = self.compute_probs(model, pipeline, info)
                store.write_entry(
                    key,
                    probs,
                    meta=meta,
                    compress=self.compress,
                    img_bytes=_file_size(info['img_path']),
                    learner=learner)
                counts['computed'] += 1
            if bar is not None:
                bar.update()
        if bar is not None:
            bar.file.write('\n')
        return counts

    @staticmethod
    def _entry_problem(store: E2ECacheStore, key: str, meta: dict,
                       img_path: str) -> Optional[str]:
        """None if the entry of ``key`` is valid, else why not."""
        if not osp.isfile(store.entry_path(key)):
            return 'missing'
        try:
            header = store.check_entry(key, meta=meta)
        except E2ECacheError as e:
            return str(e)
        size = _file_size(img_path)
        if size is not None and header.get('img_bytes') not in (None, size):
            return (f'{store.entry_path(key)}: image {img_path} changed '
                    f'size ({header.get("img_bytes")} -> {size} bytes)')
        return None

    @torch.no_grad()
    def compute_probs(self, model: ResEnsembleSegmentor, pipeline: Compose,
                      info: dict) -> Tensor:
        """x̂0 of one image at the finest E2E feature level's resolution.

        Args:
            model (ResEnsembleSegmentor): The (unwrapped) model.
            pipeline (Compose): The test pipeline.
            info (dict): The image's data info (``img_path``, ...).

        Returns:
            Tensor: Probabilities (K, h, w) on the CPU, covering the image
            (padding removed).
        """
        data = pipeline(copy.deepcopy(info))
        if data is None:
            raise ValueError(f'the test pipeline dropped {info["img_path"]}')
        batch = model.data_preprocessor(
            dict(inputs=[data['inputs']], data_samples=[data['data_samples']]),
            False)
        inputs = batch['inputs']
        img_meta = batch['data_samples'][0].metainfo
        left, right, top, bottom = img_meta.get('img_padding_size',
                                                [0, 0, 0, 0])
        H, W = inputs.shape[-2:]
        probs = model.e2e_probs(inputs, [img_meta])
        probs = probs[..., top:H - bottom, left:W - right]
        if self._store_stride is None:
            self._store_stride = _finest_stride(model, inputs)
        size = [
            max(1, round(s / self._store_stride)) for s in probs.shape[-2:]
        ]
        probs = F.interpolate(probs, size=size, mode='area')
        return probs[0].float().cpu()

    @staticmethod
    def _summarise(counts: Dict[str, int], num_images: int,
                   start: float) -> Dict[str, float]:
        """The counts of every rank summed, with the build's seconds."""
        total = torch.tensor(
            [counts['reused'], counts['computed'], counts['repaired']],
            dtype=torch.int64)
        all_reduce(total)
        return dict(
            images=num_images,
            reused=int(total[0]),
            computed=int(total[1]),
            repaired=int(total[2]),
            seconds=round(time.perf_counter() - start, 3))


def _file_size(path: str) -> Optional[int]:
    """Bytes of a local file; None if it is not one (e.g. a URL)."""
    try:
        return os.stat(path).st_size
    except (OSError, TypeError):
        return None


def _finest_stride(model: ResEnsembleSegmentor, inputs: Tensor) -> float:
    """The stride of the finest E2E feature level on (1, 3, H, W) inputs
    (as fine as the zoo's decoders output, PointRend's test-time point
    refinement excepted)."""
    feats = model.extract_feat(inputs)
    return inputs.shape[-2] / max(f.shape[-2] for f in feats)
