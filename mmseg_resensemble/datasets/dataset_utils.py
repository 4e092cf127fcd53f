# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""Walking through wrapped data sets and nested pipelines."""
from typing import Any, Iterator, Tuple, Type


def base_datasets(dataset: Any) -> Iterator[Any]:
    """The data sets inside ``ConcatDataset``/``RepeatDataset``/... ."""
    if hasattr(dataset, 'datasets'):
        for ds in dataset.datasets:
            yield from base_datasets(ds)
    elif hasattr(dataset, 'dataset'):
        yield from base_datasets(dataset.dataset)
    else:
        yield dataset


def iter_transforms(pipeline: Any) -> Iterator[Any]:
    """Every transform of a ``Compose``, nested ones (TTA) included."""
    for t in getattr(pipeline, 'transforms', None) or []:
        yield t
        yield from iter_transforms(t)


def find_transforms(dataset: Any, cls: Type) -> Iterator[Tuple[Any, Any]]:
    """``(base data set, transform)`` for every ``cls`` transform in the
    pipelines of ``dataset``'s base data sets, nested ones included."""
    for ds in base_datasets(dataset):
        for t in iter_transforms(getattr(ds, 'pipeline', None)):
            if isinstance(t, cls):
                yield ds, t
