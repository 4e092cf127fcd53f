# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""PNG figures of benchmark results (matplotlib, no display needed).

Each function draws one figure from plain numbers and writes it to
``path``; the benchmark tools call them beside their JSON.
"""
import math
import os
import os.path as osp
from typing import Dict, Optional, Sequence

import numpy as np


def _figure(width: float, height: float):
    # a figure of its own canvas: no global pyplot state, no display
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str) -> str:
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    return path


def per_class_iou_figure(classes: Sequence[str],
                         series: Dict[str, Sequence[float]],
                         path: str,
                         title: str = '') -> str:
    """Grouped bars: the IoU (%) of each class for each model.

    Args:
        classes (Sequence[str]): Class names.
        series (dict[str, Sequence[float]]): Model name -> IoU per class
            (NaN: absent class, no bar); the legend shows each mIoU.
        path (str): The PNG to write.
        title (str): Figure title.

    Returns:
        str: ``path``.
    """
    for name, values in series.items():
        if len(values) != len(classes):
            raise ValueError(f'{name!r} has {len(values)} IoU values for '
                             f'{len(classes)} classes')
    fig = _figure(max(6.0, 0.75 * len(classes) + 2), 4.0)
    ax = fig.add_subplot()
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(classes))
    for i, (name, values) in enumerate(series.items()):
        values = np.asarray(values, dtype=float)
        ax.bar(
            x + (i - (len(series) - 1) / 2) * width,
            np.nan_to_num(values),
            width,
            label=f'{name} (mIoU {np.nanmean(values):.1f})')
    ax.set_xticks(x)
    ax.set_xticklabels(classes, rotation=30, ha='right')
    ax.set_ylabel('IoU (%)')
    ax.set_ylim(0, 100)
    ax.grid(axis='y', alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return _save(fig, path)


def reliability_figure(panels: Dict[str, dict],
                       path: str,
                       title: str = '') -> str:
    """Reliability diagrams, one panel per model: the accuracy of each
    confidence bin against the diagonal of perfect calibration, the bins'
    pixel shares below.

    Args:
        panels (dict[str, dict]): Model name -> a ``calibration`` summary
            (:meth:`CalibrationCounter.summary`: ``ECE``, ``NLL`` and
            ``reliability`` with ``edges``, ``count``, ``confidence``,
            ``accuracy``).
        path (str): The PNG to write.
        title (str): Figure title.

    Returns:
        str: ``path``.
    """
    if not panels:
        raise ValueError('reliability_figure needs at least one panel')
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = _figure(3.2 * cols, 3.4 * rows)
    for i, (name, cal) in enumerate(panels.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        rel = cal['reliability']
        edges = np.asarray(rel['edges'])
        centres = (edges[:-1] + edges[1:]) / 2
        accuracy = np.array(
            [np.nan if a is None else a for a in rel['accuracy']])
        share = np.asarray(rel['count'], float) / max(sum(rel['count']), 1)
        ax.bar(
            centres,
            np.nan_to_num(accuracy),
            width=np.diff(edges),
            edgecolor='black',
            linewidth=0.5,
            label='accuracy')
        ax.plot([0, 1], [0, 1], '--', color='grey', label='calibrated')
        ax.bar(
            centres,
            share,
            width=np.diff(edges),
            color='tab:orange',
            alpha=0.5,
            label='pixel share')
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel('confidence')
        ax.set_ylabel('accuracy')
        ax.set_title(
            f'{name}\nECE {cal["ECE"]:.2f} %, NLL {cal["NLL"]:.3f}',
            fontsize=9)
        if i == 0:
            ax.legend(fontsize=7, loc='upper left')
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def lines_figure(x: Sequence[float],
                 series: Dict[str, Sequence[Optional[float]]],
                 path: str,
                 xlabel: str,
                 ylabel: str,
                 title: str = '',
                 log_x: bool = False) -> str:
    """One line per series over the same x (for example mIoU or latency
    against the number of DDIM steps); None is a gap.

    Returns:
        str: ``path``.
    """
    fig = _figure(5.0, 3.6)
    ax = fig.add_subplot()
    for name, values in series.items():
        if len(values) != len(x):
            raise ValueError(
                f'{name!r} has {len(values)} values for {len(x)} x values')
        y = np.array([np.nan if v is None else v for v in values], float)
        ax.plot(x, y, 'o-', label=name)
    if log_x:
        ax.set_xscale('log')
    ax.set_xticks(list(x))
    ax.set_xticklabels([f'{v:g}' for v in x])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return _save(fig, path)
