# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""Walking through wrapped data sets and nested pipelines; empty splits."""
from typing import Any, Iterator, List, Tuple, Type


def base_datasets(dataset: Any) -> Iterator[Any]:
    """The data sets inside ``ConcatDataset``/``RepeatDataset``/... ."""
    if hasattr(dataset, 'datasets'):
        for ds in dataset.datasets:
            yield from base_datasets(ds)
    elif hasattr(dataset, 'dataset'):
        yield from base_datasets(dataset.dataset)
    else:
        yield dataset


def check_not_empty(dataset: Any, data_list: List[dict]) -> List[dict]:
    """Return ``data_list``; raise ``ValueError`` naming the folders when it
    is empty.

    An empty split otherwise fails while the data set is serialised, with
    numpy's ``need at least one array to concatenate``.
    """
    if not data_list:
        folders = {k: v for k, v in dataset.data_prefix.items() if v}
        ann_file = getattr(dataset, 'ann_file', None)
        raise ValueError(
            f'{type(dataset).__name__}: no samples found in {folders}' +
            (f' listed by ann_file={ann_file!r}' if ann_file else '') +
            f' (img_suffix={dataset.img_suffix!r}, seg_map_suffix='
            f'{dataset.seg_map_suffix!r}); check data_root and data_prefix')
    return data_list


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
