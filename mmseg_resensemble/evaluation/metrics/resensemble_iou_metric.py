# Copyright (c) mmseg-resensemble contributors. All rights reserved.
from typing import Dict, Sequence

from mmengine.logging import print_log
from mmseg.evaluation import IoUMetric
from mmseg.registry import METRICS


@METRICS.register_module()
class ResEnsembleIoUMetric(IoUMetric):
    """MMSeg's ``IoUMetric`` for the ensemble and for its E2E learner.

    Scores ``pred_sem_seg`` (the ResEnsemble prediction) exactly as
    ``IoUMetric`` does, under the usual keys (``mIoU``, ``aAcc``, ...), and
    ``e2e_pred_sem_seg`` (the frozen E2E learner's own prediction, which
    :class:`ResEnsembleSegmentor` adds to each sample) on the same images,
    under ``e2e_``-prefixed keys, so one test run compares both learners.
    Samples without an E2E prediction are scored for the ensemble only.
    Arguments are those of ``IoUMetric``.
    """

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        start = len(self.results)
        super().process(data_batch, data_samples)
        if self.format_only:
            return
        ensemble = self.results[start:]
        del self.results[start:]
        num_classes = len(self.dataset_meta['classes'])
        for sample, stats in zip(data_samples, ensemble):
            e2e = None
            if 'e2e_pred_sem_seg' in sample:
                pred = sample['e2e_pred_sem_seg']['data'].squeeze()
                label = sample['gt_sem_seg']['data'].squeeze().to(pred)
                e2e = self.intersect_and_union(pred, label, num_classes,
                                               self.ignore_index)
            self.results.append(dict(ensemble=stats, e2e=e2e))

    def compute_metrics(self, results: list) -> Dict[str, float]:
        print_log('ResEnsemble (ensemble of both learners):', 'current')
        metrics = super().compute_metrics([r['ensemble'] for r in results])
        e2e = [r['e2e'] for r in results if r['e2e'] is not None]
        if e2e:
            print_log(f'E2E learner alone ({len(e2e)} images):', 'current')
            e2e_metrics = super().compute_metrics(e2e)
            metrics.update({f'e2e_{k}': v for k, v in e2e_metrics.items()})
        return metrics
