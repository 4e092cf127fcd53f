# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""Refuse inconsistent data and models before training or testing."""
from typing import Any, List, Optional

from mmcv.transforms import LoadAnnotations
from mmengine.dist import all_gather_object, get_dist_info
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS

from mmseg_resensemble.datasets.dataset_utils import (base_datasets,
                                                      find_transforms)
from mmseg_resensemble.datasets.transforms.checks import CheckImageAndLabel
from mmseg_resensemble.models.segmentors import ResEnsembleSegmentor

__all__ = ['ResEnsembleSanityCheckHook']


def _describe(dataset: Any) -> str:
    parts = [type(dataset).__name__]
    for key in ('data_root', 'data_prefix', 'ann_file'):
        value = getattr(dataset, key, None)
        if value:
            parts.append(f'{key}={value!r}')
    return ' '.join(parts)


@HOOKS.register_module()
class ResEnsembleSanityCheckHook(Hook):
    """Check data set and model against each other before training,
    validation and testing, and raise ``ValueError`` saying what differs.

    Before training (``before_train``; priority ``HIGHEST``, so before the
    E2E cache is built) it refuses a :class:`ResEnsembleSegmentor` whose
    frozen E2E learner was never loaded (``e2e_checkpoint=None`` and no
    ``load_from`` or resumed checkpoint; ``allow_random_e2e=True`` allows
    it) and checks the training set, before validation and testing the
    validation and test sets:

    * the set is not empty (an empty ``InfiniteSampler`` loops forever
      instead of failing): the message names the data set's type,
      ``data_root`` and ``data_prefix``;
    * its number of classes, ``len(dataset.metainfo['classes'])``, equals
      the model's: for a :class:`ResEnsembleSegmentor` the E2E learner's
      (``model.e2e_num_classes``) and the diffusion head's
      (``model.decode_head.num_classes``), for another MMSeg segmentor its
      ``num_classes``; the message names every count;
    * a :class:`CheckImageAndLabel` in the pipeline expects as many image
      channels as the data preprocessor's ``mean`` has values.

    With ``scan_files=True`` it also runs, before training, the training
    pipeline up to its :class:`CheckImageAndLabel` on every sample (the
    ranks share the work), so a grayscale image, a mis-sized, truncated or
    unreadable label map or a bad label value anywhere in the set stops
    the run before the first iteration, not hours into it, naming the
    file. A pipeline without a :class:`CheckImageAndLabel` is run up to its
    ``LoadAnnotations``, then checked with the model's class count, the
    head's ``ignore_index`` and the data preprocessor's channels. That
    reads every image and label map once.

    Args:
        scan_files (bool): Check every training sample before training.
            Defaults to False.
        scan_val_files (bool): The same for the validation and test sets,
            before each validation and test. Defaults to False.
    """

    priority = 'HIGHEST'

    def __init__(self,
                 scan_files: bool = False,
                 scan_val_files: bool = False) -> None:
        for key, value in (('scan_files', scan_files), ('scan_val_files',
                                                        scan_val_files)):
            if not isinstance(value, bool):
                raise ValueError(f'{key} must be a bool, got {value!r}')
        self.scan_files = scan_files
        self.scan_val_files = scan_val_files
        self._val_scanned = False
        self._test_scanned = False

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        if isinstance(model, ResEnsembleSegmentor):
            model.check_e2e_loaded()
        self.check(runner, runner.train_dataloader.dataset, 'train',
                   self.scan_files)

    def before_val(self, runner) -> None:
        scan = self.scan_val_files and not self._val_scanned
        self.check(runner, runner.val_dataloader.dataset, 'val', scan)
        self._val_scanned = self._val_scanned or scan

    def before_test(self, runner) -> None:
        scan = self.scan_val_files and not self._test_scanned
        self.check(runner, runner.test_dataloader.dataset, 'test', scan)
        self._test_scanned = self._test_scanned or scan

    # ------------------------------------------------------------------
    # the checks
    # ------------------------------------------------------------------
    @staticmethod
    def model_class_counts(model: Any) -> List[tuple]:
        """(name, count) of the model's class counts."""
        if is_model_wrapper(model):
            model = model.module
        if isinstance(model, ResEnsembleSegmentor):
            return [('the E2E learner (model.e2e_num_classes)',
                     model.e2e_num_classes),
                    ('the diffusion head (model.decode_head.num_classes)',
                     model.decode_head.num_classes)]
        if hasattr(model, 'num_classes'):
            return [('the model (model.num_classes)', model.num_classes)]
        return []

    def check(self, runner, dataset: Any, split: str, scan: bool) -> None:
        """Run the checks on ``dataset`` of ``split``.

        Raises:
            ValueError: Naming the data set and the counts that differ.
        """
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        if len(dataset) == 0:
            where = '; '.join(_describe(ds) for ds in base_datasets(dataset))
            raise ValueError(f'the {split} data set is empty: {where}')

        classes = (getattr(dataset, 'metainfo', None) or {}).get('classes')
        counts = self.model_class_counts(model)
        if classes is not None and counts:
            named = [(f'the {split} data set '
                      f"(len(dataset.metainfo['classes']))", len(classes))]
            named += counts
            if len({n for _, n in named}) > 1:
                raise ValueError('class counts disagree: ' +
                                 ', '.join(f'{name} has {n}'
                                           for name, n in named) +
                                 f"; the data set's classes: {classes}")

        mean = getattr(getattr(model, 'data_preprocessor', None), 'mean', None)
        channels = None if mean is None else int(mean.numel())
        for ds, t in find_transforms(dataset, CheckImageAndLabel):
            if (channels is not None and t.num_channels is not None
                    and t.num_channels != channels):
                raise ValueError(
                    f'the {split} pipeline of {_describe(ds)} has '
                    f'CheckImageAndLabel(num_channels={t.num_channels}) but '
                    f"the data preprocessor's mean has {channels} values")
        if scan:
            ignore_index = getattr(
                getattr(model, 'decode_head', None), 'ignore_index', None)
            default = CheckImageAndLabel(
                num_channels=channels,
                num_classes=counts[0][1] if counts else None,
                ignore_index=255 if ignore_index is None else ignore_index)
            self.scan(dataset, split, default)

    @staticmethod
    def scan(dataset: Any,
             split: str,
             default: Optional[CheckImageAndLabel] = None) -> None:
        """Run every sample's pipeline up to :class:`CheckImageAndLabel`.

        A pipeline without one runs up to its ``LoadAnnotations``, then
        ``default``. Each rank checks every ``world_size``-th sample of
        each base data set; the ranks then share what they found, and all
        raise.

        Raises:
            ValueError: The first problems found, with their files (files
                that cannot be read are reported too); or no pipeline has
                a ``CheckImageAndLabel`` or a ``LoadAnnotations``.
        """
        rank, world_size = get_dist_info()
        errors = []
        checked = 0
        scanned = False
        for ds in base_datasets(dataset):
            transforms = getattr(
                getattr(ds, 'pipeline', None), 'transforms', None) or []
            prefix = []
            for t in transforms:
                prefix.append(t)
                if isinstance(t, CheckImageAndLabel):
                    break
            else:
                loads = [
                    i for i, t in enumerate(transforms)
                    if isinstance(t, LoadAnnotations)
                ]
                if not loads or default is None:
                    continue
                prefix = transforms[:loads[0] + 1] + [default]
            scanned = True
            for idx in range(rank, len(ds), world_size):
                results: Optional[dict] = ds.get_data_info(idx)
                img_path = results.get('img_path')
                try:
                    for t in prefix:
                        results = t(results)
                        if results is None:
                            break
                except ValueError as e:
                    errors.append(str(e))
                except Exception as e:  # unreadable or missing files
                    if isinstance(t, LoadAnnotations):
                        where = f"label map {results.get('seg_map_path')}"
                    else:
                        where = f'image {img_path}'
                    errors.append(f'sample {idx}, {where}: cannot be read '
                                  f'by {type(t).__name__} '
                                  f'({type(e).__name__}: {e})')
                checked += 1
        if not scanned:
            raise ValueError(
                f'scanning the {split} files needs a CheckImageAndLabel or '
                f'a LoadAnnotations in the {split} pipeline')
        # every rank's (this rank's alone in a single process)
        errors = sum(all_gather_object(errors), [])
        checked = sum(all_gather_object(checked))
        if errors:
            shown = '\n  '.join(errors[:10])
            more = f'\n  ... and {len(errors) - 10} more' if len(
                errors) > 10 else ''
            raise ValueError(f'{len(errors)} bad sample(s) in the {split} '
                             f'data set:\n  {shown}{more}')
        print_log(
            f'ResEnsembleSanityCheckHook: checked {checked} {split} samples',
            logger='current')
