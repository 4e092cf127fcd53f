# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""The E2E cache in mmengine's runner: a hook that builds it before
training, and :func:`build_e2e_cache` to build it before the data workers
start."""
from typing import Any, Dict, List, Optional

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS

from .builder import E2ECacheBuilder
from .store import E2ECacheError

__all__ = ['E2ECacheHook', 'build_e2e_cache']


@HOOKS.register_module()
class E2ECacheHook(Hook):
    """Compute x̂0 = E2E(I0) of every training image once, before training.

    Before training it builds or completes the cache of the training set
    with an :class:`~mmseg_resensemble.e2e_cache.builder.E2ECacheBuilder`
    (the frozen E2E learner in test mode over every training image, stored
    at the finest E2E feature level's resolution in ``cache_dir``).
    ``LoadE2ECache`` and ``PackResEnsembleInputs`` in the train pipeline
    then feed x̂0 to the segmentor, which skips the E2E decode head (the
    backbone still runs for the diffusion learner's features).

    The cache is plain data: one directory, named in the config once and
    given to both this hook and ``LoadE2ECache`` (the configs'
    ``e2e_cache_dir``); the hook reads the pipeline to check that they
    agree and never rewrites it. Build it before the data loader starts:
    ``tools/build_e2e_cache.py CONFIG``, or this project's
    ``tools/train.py``, which calls :func:`build_e2e_cache` before training.
    Otherwise the hook builds it in ``before_train``; as the training data
    workers start before that (``IterBasedTrainLoop`` starts them when it is
    built) and may have loaded missing or stale entries, a run with
    ``num_workers > 0`` whose cache needed computing stops there with
    :class:`E2ECacheError`, the cache complete for the next start.

    A cache whose fingerprint matches is reused, entry by entry; one with
    another fingerprint is rebuilt. While it trains, the run is registered
    as a user of the cache (``cache_dir/users/``), and a run with another
    fingerprint is refused instead of rebuilding the cache under it.

    Args:
        cache_dir (str): The cache directory, the ``cache_dir`` of the
            train pipeline's ``LoadE2ECache``; share it between runs of
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
        self.builder = E2ECacheBuilder(
            cache_dir,
            pipeline=pipeline,
            topk=topk,
            compress=compress,
            rebuild=rebuild,
            out_of_fold=out_of_fold)
        # what the last build did, summed over ranks
        self.stats: Dict[str, float] = {}
        # whether prepare() completed the cache before the training loop
        # (and with it the data workers) started
        self._ready = False

    @property
    def cache_dir(self) -> str:
        """The cache directory."""
        return self.builder.cache_dir

    def prepare(self, runner, dataset: Any) -> Dict[str, float]:
        """Build or complete the cache of ``dataset``'s images before the
        training loop starts, and record whether it is complete, in which
        case :meth:`before_train` has nothing left to do. Every rank takes
        part.

        Args:
            runner (Runner): Gives the model (a ``ResEnsembleSegmentor``,
                maybe wrapped), ``cfg`` and ``work_dir``; its train loop is
                not needed.
            dataset: The training set.

        Returns:
            dict: :attr:`stats` of this build: ``images``, ``reused``,
            ``computed``, ``repaired`` and ``seconds``.
        """
        self._ready = False
        stats = self._build(runner, dataset)
        self._ready = stats['reused'] + stats['computed'] == stats['images']
        return stats

    def before_train(self, runner) -> None:
        """Build or complete the cache, unless :meth:`prepare` completed it
        before the training loop started.

        Raises:
            E2ECacheError: If entries had to be computed while the training
                data workers were running (they started before the cache
                was complete); the cache is complete when it is raised.
        """
        if self._ready:
            return
        self._build(runner, runner.train_dataloader.dataset)
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

    def after_run(self, runner) -> None:
        """Stop using the cache: another E2E learner may rebuild it now."""
        self.builder.release()

    def _build(self, runner, dataset: Any) -> Dict[str, float]:
        """The builder's build with the runner's model, config and work
        dir; the stats recorded in :attr:`stats`."""
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        self.stats = self.builder.build(
            model,
            dataset,
            cfg=runner.cfg,
            run=getattr(runner, 'work_dir', None))
        return self.stats


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
    dataset = runner.build_dataloader(runner.cfg.train_dataloader).dataset
    return hooks[0].prepare(runner, dataset)
