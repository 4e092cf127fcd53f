# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""Build the E2E output cache before training (Algorithm 1: x̂0 = E2E(I0)
needs no gradient and can be cached)."""
import atexit
import contextlib
import copy
import json
import logging
import os
import os.path as osp
import time
from typing import Any, Dict, List, Optional

import torch
import torch.nn.functional as F
from mmengine.dataset import Compose
from mmengine.dist import (all_reduce, barrier, broadcast_object_list,
                           get_dist_info)
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.runner import load_checkpoint
from mmengine.utils import ProgressBar
from mmseg.registry import HOOKS
from torch import Tensor

from ...datasets.dataset_utils import base_datasets, find_transforms
from ...datasets.e2e_cache_store import (E2ECacheError, E2ECacheStore,
                                         canonical_json, file_sha256,
                                         fingerprint_digest, state_dict_sha256)
from ...datasets.transforms import LoadE2ECache
from ...models.segmentors import ResEnsembleSegmentor
from ...utils.checkpoint_checks import REVISE_KEYS
from ...utils.e2e_cache_dir import config_type_name

__all__ = ['E2ECacheHook', 'build_e2e_cache']


@HOOKS.register_module()
class E2ECacheHook(Hook):
    """Compute x̂0 = E2E(I0) of every training image once, before training.

    Before training it runs the frozen E2E learner of the
    ``ResEnsembleSegmentor`` in test mode (``model.e2e.test_cfg``: whole or
    slide) over every image of the training set, through a test pipeline,
    with the segmentor's :meth:`~ResEnsembleSegmentor.e2e_probs` (the
    method that gives x̂0 on the fly too), and stores the probabilities
    area-averaged to the resolution of the finest E2E feature level
    (stride 4 for most zoo backbones) in ``cache_dir`` (see
    :mod:`mmseg_resensemble.datasets.e2e_cache_store`).
    :class:`LoadE2ECache` and :class:`PackResEnsembleInputs` in the train
    pipeline then feed them to the segmentor, which skips the E2E decode
    head (the backbone still runs for the diffusion learner's features).

    The cache is plain data: one directory, named in the config once and
    given to both this hook and :class:`LoadE2ECache` (the configs'
    ``e2e_cache_dir``); the hook reads the pipeline to check that they
    agree and never rewrites it. Build it before the data loader starts:
    ``tools/build_e2e_cache.py CONFIG``, or this project's
    ``tools/train.py``, which calls :func:`build_e2e_cache` before training.
    Otherwise the hook builds it in ``before_train``; as the training data
    workers start before that (``IterBasedTrainLoop`` starts them when it is
    built) and may have loaded missing or stale entries, a run with
    ``num_workers > 0`` whose cache needed computing stops there with
    :class:`E2ECacheError`, the cache complete for the next start.

    A cache whose fingerprint matches (E2E config, architecture, weights
    and checkpoint bytes, data preprocessor, test pipeline, classes and
    storage format) is reused: every entry is checked and only missing,
    invalid or stale ones are computed, so a killed build resumes. A cache
    with another fingerprint is rebuilt, and the log says which fields
    changed. Each rank computes every ``world_size``-th image; the ranks
    then wait for each other. While it trains, the run is registered as a
    user of the cache (``cache_dir/users/``); a run with another
    fingerprint is refused, naming that run, instead of rebuilding the
    cache under it.

    Args:
        cache_dir (str): The cache directory, the ``cache_dir`` of the
            train pipeline's :class:`LoadE2ECache`; share it between runs of
            the same E2E learner.
        pipeline (list[dict], optional): The test pipeline that loads an
            image for the E2E learner. None takes the ``test_dataloader``'s
            (else the ``val_dataloader``'s) pipeline without its
            annotation loading.
        topk (int, optional): Store only the k most probable classes per
            pixel (for many classes, e.g. ADE20K's 150). None stores all.
        compress (bool): zlib-compress the entries. Defaults to True.
        rebuild (bool): Recompute every entry even if the cache is valid.
            Defaults to False.
        out_of_fold (list[dict], optional): Out-of-fold x̂0, as stacking
            trains its second learner: one ``dict(checkpoint=..., held_out=
            ...)`` per fold, the weights of an E2E learner of the same
            config trained without the fold's images, and those images
            (an MMSeg ``ann_file``: a file with one name a line, the image
            path relative to the image folder without its suffix, or a list
            of such names). Each training image must be held out by exactly
            one fold; its entry is computed by that fold's learner, and its
            header names the learner (``learner='fold{i}'``, else
            ``'e2e'``). The model's own E2E learner (trained on all images)
            still gives x̂0 at test time. None (default): every entry comes
            from the model's E2E learner.
    """

    priority = 'VERY_HIGH'

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
        # what the last build did, summed over ranks
        self.stats: Dict[str, float] = {}
        self._store_stride: Optional[float] = None
        # rank 0's registration as a user of the cache (while it trains)
        self._user_file: Optional[str] = None
        # whether build_e2e_cache() built the cache before the training
        # loop started
        self._ready = False

    # ------------------------------------------------------------------
    # the hook
    # ------------------------------------------------------------------
    def before_train(self, runner) -> None:
        """Build or complete the cache, unless :func:`build_e2e_cache` did
        before the training loop started.

        Raises:
            E2ECacheError: If entries had to be computed while the training
                data workers were running (they started before the cache
                was complete); the cache is complete when it is raised.
        """
        if self._ready:
            return
        self.build_cache(runner, runner.train_dataloader.dataset)
        computed = self.stats['computed']
        workers = getattr(runner.train_dataloader, 'num_workers', 0)
        if computed and workers:
            raise E2ECacheError(
                f'E2ECacheHook: the E2E cache {self.cache_dir} was not '
                f'complete when the {workers} training data workers started '
                f'({computed} of {self.stats["images"]} entries were '
                'computed now), so they may have loaded missing or stale '
                'entries. The cache is complete now: start the training '
                'again. To build it before the data loader starts, run '
                '`python tools/build_e2e_cache.py CONFIG` first, or train '
                "with this project's tools/train.py, which does so.")

    def build_cache(self, runner, dataset: Any) -> Dict[str, float]:
        """Build or complete the cache of ``dataset``'s images (every rank
        takes part), as :meth:`before_train` and ``tools/build_e2e_cache.py``
        do.

        Args:
            runner (Runner): Gives the model (a ``ResEnsembleSegmentor``,
                maybe wrapped), ``cfg`` and ``work_dir``; its train loop is
                not needed.
            dataset: The training set.

        Returns:
            dict: :attr:`stats` of this build.
        """
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        if not isinstance(model, ResEnsembleSegmentor):
            raise TypeError('E2ECacheHook needs a ResEnsembleSegmentor, got '
                            f'{type(model).__name__}')
        start = time.perf_counter()
        self._store_stride = None
        self._ready = False
        cache_dir = self._check_pipeline(dataset)
        samples = self._training_samples(dataset)
        if not samples:
            raise ValueError('E2ECacheHook: the training set has no images')
        pipeline_cfg = self._test_pipeline_cfg(runner)
        pipeline = Compose(copy.deepcopy(pipeline_cfg))
        classes = list(dataset.metainfo.get('classes') or [])
        num_classes = 2 if model.e2e.num_classes == 1 else int(
            model.e2e.num_classes)
        if self.topk is not None and self.topk >= num_classes:
            raise ValueError(f'topk={self.topk} must be < num_classes='
                             f'{num_classes}; use topk=None')
        fields = self.fingerprint_fields(
            model,
            pipeline_cfg,
            classes,
            num_classes,
            cfg=runner.cfg,
            topk=self.topk)
        if self.out_of_fold is not None:
            fields['out_of_fold'] = [
                dict(
                    checkpoint_sha256=file_sha256(fold['checkpoint']),
                    held_out=sorted(fold['held_out']))
                for fold in self.out_of_fold
            ]
        learners = self._learners(samples)
        digest = fingerprint_digest(fields)
        key_root = self._key_root(dataset, samples)
        store = E2ECacheStore(cache_dir)
        rank, world_size = get_dist_info()
        meta_kwargs = dict(
            digest=digest,
            fingerprint=fields,
            num_classes=num_classes,
            topk=self.topk,
            key_root=key_root,
            e2e_checkpoint=getattr(model, 'e2e_checkpoint', None),
            num_images=len(samples))
        refused = [None]
        if rank == 0:
            try:
                self._release_user()
                self._user_file = store.register_user(
                    digest, run=str(getattr(runner, 'work_dir', None)))
            except E2ECacheError as e:
                refused = [str(e)]
            else:
                atexit.register(E2ECacheStore.release_user, self._user_file)
                self._prepare(store, fields, meta_kwargs)
        # every rank raises, none waits for rank 0 at the barrier
        broadcast_object_list(refused)
        if refused[0] is not None:
            raise E2ECacheError(refused[0])
        barrier()
        meta = store.read_meta()

        counts = dict(reused=0, computed=0, repaired=0)
        checkpoints = [f['checkpoint'] for f in (self.out_of_fold or [])]
        for fold, checkpoint in enumerate([None] + checkpoints):
            mine = [
                info for info, learner in zip(samples, learners)
                if learner == fold - 1
            ][rank::world_size]
            if not mine:
                continue
            with self._e2e_weights(model, checkpoint):
                done = self._fill(
                    model,
                    store,
                    meta,
                    pipeline,
                    mine,
                    rank,
                    learner='e2e' if checkpoint is None else f'fold{fold - 1}')
            for k in counts:
                counts[k] += done[k]
        total = torch.tensor(
            [counts['reused'], counts['computed'], counts['repaired']],
            dtype=torch.int64)
        all_reduce(total)
        self.stats = dict(
            images=len(samples),
            reused=int(total[0]),
            computed=int(total[1]),
            repaired=int(total[2]),
            seconds=round(time.perf_counter() - start, 3))
        if rank == 0:
            done = self.stats['reused'] + self.stats['computed']
            store.write_meta(complete=done == len(samples), **meta_kwargs)
            size = store.disk_bytes()
            print_log(
                f'E2E cache {cache_dir} ready: {len(samples)} images, '
                f'{self.stats["reused"]} reused, {self.stats["computed"]} '
                f'computed ({self.stats["repaired"]} of them replaced '
                f'invalid entries); {size / 2**20:.1f} MiB, '
                f'{size / len(samples) / 1024:.1f} KiB per image',
                logger='current')
        barrier()
        return self.stats

    def after_run(self, runner) -> None:
        """Stop using the cache: another E2E learner may rebuild it now."""
        self._release_user()

    def _release_user(self) -> None:
        if self._user_file is not None:
            E2ECacheStore.release_user(self._user_file)
            self._user_file = None

    # ------------------------------------------------------------------
    # configuration
    # ------------------------------------------------------------------
    def _cache_transforms(self, dataset: Any) -> List[LoadE2ECache]:
        """The ``LoadE2ECache`` transforms of the training pipelines."""
        return [t for _, t in find_transforms(dataset, LoadE2ECache)]

    def _check_pipeline(self, dataset: Any) -> str:
        """The cache directory, checked against the ``LoadE2ECache``
        transforms of the train pipeline (read, never rewritten)."""
        transforms = self._cache_transforms(dataset)
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
        return self.cache_dir

    def _test_pipeline_cfg(self, runner) -> List[dict]:
        """The test pipeline without annotation loading."""
        if self.pipeline is not None:
            pipeline = list(self.pipeline)
        else:
            cfg = runner.cfg
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
    # fingerprint
    # ------------------------------------------------------------------
    @staticmethod
    def fingerprint_fields(model: torch.nn.Module,
                           pipeline_cfg: List[dict],
                           classes: List[str],
                           num_classes: int,
                           *,
                           cfg: Any = None,
                           topk: Optional[int] = None) -> Dict[str, Any]:
        """What a cache entry depends on.

        Args:
            model (ResEnsembleSegmentor): The (unwrapped) model.
            pipeline_cfg (list[dict]): The test pipeline.
            classes (list[str]): The training set's classes.
            num_classes (int): K, the channels of x̂0.
            cfg (Config, optional): The run's config; its
                ``model.e2e`` is resolved to the E2E model config.
            topk (int, optional): The stored top-k, None if dense.

        Returns:
            dict: JSON-serialisable fields.
        """
        from mmseg_resensemble.models.segmentors.e2e_learner import (
            is_absent_file, load_e2e_config)
        e2e_cfg = None
        model_cfg = cfg.get('model') if cfg is not None else None
        if model_cfg is not None and model_cfg.get('e2e') is not None:
            e2e_cfg = without_weight_sources(
                load_e2e_config(model_cfg['e2e']).to_dict())
        checkpoint = getattr(model, 'e2e_checkpoint', None)
        if checkpoint is None or is_absent_file(checkpoint):
            # the weights came with the whole model (load_from, resume):
            # e2e_state_sha256 covers them
            checkpoint_sha = None
        elif osp.isfile(checkpoint):
            checkpoint_sha = file_sha256(checkpoint)
        else:  # a URL: its bytes are covered by e2e_state_sha256
            checkpoint_sha = f'url:{checkpoint}'
        pre = model.data_preprocessor
        preprocessor = dict(
            type=type(pre).__name__,
            mean=getattr(pre, 'mean', None),
            std=getattr(pre, 'std', None),
            channel_conversion=getattr(pre, 'channel_conversion', None),
            pad_val=getattr(pre, 'pad_val', None),
            test_cfg=getattr(pre, 'test_cfg', None))
        test_cfg = model.e2e.test_cfg
        return json_fields(
            storage=dict(
                dtype='uint8',
                layout='hwc',
                topk=topk,
                resolution='finest-feature-level'),
            e2e_config=e2e_cfg,
            e2e_architecture=fingerprint_digest(
                dict(arch=architecture(model.e2e))),
            e2e_test_cfg=dict(test_cfg) if test_cfg is not None else None,
            e2e_checkpoint_sha256=checkpoint_sha,
            e2e_state_sha256=state_dict_sha256(model.e2e),
            data_preprocessor=preprocessor,
            test_pipeline=pipeline_cfg,
            classes=classes,
            num_classes=num_classes)

    def _prepare(self, store: E2ECacheStore, fields: Dict[str, Any],
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
            old_fields = old.get('fingerprint') or {}
            changed = sorted(
                k for k in set(old_fields) | set(fields) if canonical_json(
                    old_fields.get(k)) != canonical_json(fields.get(k)))
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
    def _e2e_weights(model: torch.nn.Module, checkpoint: Optional[str]):
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
    def _fill(self,
              model: torch.nn.Module,
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
    def compute_probs(self, model: torch.nn.Module, pipeline: Compose,
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

    # ------------------------------------------------------------------
    # the data workers
    # ------------------------------------------------------------------


def without_weight_sources(cfg: Any) -> Any:
    """``cfg`` without its ``init_cfg`` and ``pretrained`` keys, at any
    depth.

    The frozen learner's weights come from its checkpoint, which the
    fingerprint covers by content (``e2e_checkpoint_sha256``,
    ``e2e_state_sha256``); where its initial weights were read from (an
    absolute path that changes when a work dir moves) does not change x̂0.
    """
    if isinstance(cfg, dict):
        return {
            k: without_weight_sources(v)
            for k, v in cfg.items() if k not in ('init_cfg', 'pretrained')
        }
    if isinstance(cfg, (list, tuple)):
        return type(cfg)(without_weight_sources(v) for v in cfg)
    return cfg


def architecture(model: torch.nn.Module) -> list:
    """Each submodule's name, type and ``extra_repr`` (its sizes): the
    module's ``repr`` without the ``init_cfg`` lines mmengine adds."""
    return [[name, type(module).__name__,
             module.extra_repr()] for name, module in model.named_modules()]


def json_fields(**fields: Any) -> Dict[str, Any]:
    """``fields`` as plain JSON values (tuples -> lists, tensors ->
    lists), so that they compare equal after a round trip through JSON."""
    return json.loads(canonical_json(fields))


def _file_size(path: str) -> Optional[int]:
    """Bytes of a local file; None if it is not one (e.g. a URL)."""
    try:
        return os.stat(path).st_size
    except (OSError, TypeError):
        return None


def _finest_stride(model: torch.nn.Module, inputs: Tensor) -> float:
    """The stride of the finest E2E feature level on (1, 3, H, W) inputs
    (as fine as the zoo's decoders output, PointRend's test-time point
    refinement excepted)."""
    feats = model.extract_feat(inputs)
    return inputs.shape[-2] / max(f.shape[-2] for f in feats)


def build_e2e_cache(runner) -> Optional[Dict[str, float]]:
    """Build the cache of the runner's :class:`E2ECacheHook` before the
    training loop (and with it the data workers) starts, so that every
    worker finds the cache complete; the hook's ``before_train`` then has
    nothing to do. ``tools/train.py`` and ``tools/build_e2e_cache.py`` call
    it between ``Runner.from_cfg`` and ``runner.train()``; every rank takes
    part.

    Args:
        runner (Runner): A runner whose training loop is not built yet.

    Returns:
        dict, optional: The hook's :attr:`~E2ECacheHook.stats`; None if the
        runner has no :class:`E2ECacheHook`.
    """
    hooks = [h for h in runner.hooks if isinstance(h, E2ECacheHook)]
    if not hooks:
        return None
    if len(hooks) > 1:
        raise ValueError(f'the runner has {len(hooks)} E2ECacheHook; it '
                         'needs at most one')
    hook = hooks[0]
    dataset = runner.build_dataloader(runner.cfg.train_dataloader).dataset
    stats = hook.build_cache(runner, dataset)
    hook._ready = stats['reused'] + stats['computed'] == stats['images']
    return stats
