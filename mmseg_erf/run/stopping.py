"""The stopping rule: stop before ``num_images`` once the intervals are narrow enough.

After every full round of buckets (B more images), the intervals of the requested
metrics are computed for every target and group from the running bucket sums; once
each is narrower than ``width`` times its value, the run stops. ``num_images`` stays
the cap. Checking only at whole rounds keeps the buckets equally filled, so an
early stop does not weigh some images more than others. The checks use fewer
replicates than the final result (their widths steer, they are not reported):
a check costs about what the final intervals cost.
"""
import sys
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..engine.stats import (BUCKETS, REPLICATES, _replicate_maps, batch_metrics, interval,
                            replicate_metrics)
from .request import DEFAULT_CI_METRICS

CHECK_REPLICATES = 100


def add_interval_arguments(parser) -> None:
    """The command line's interval and stopping options (``tools/erf_seg.py``)."""
    parser.add_argument('--ci-buckets', type=int, default=None, metavar='B',
                        help='95%% intervals from a bootstrap over B buckets of images '
                             '(position %% B); memory and saved sums grow B-fold; 0: none; '
                             f'default {BUCKETS} for the centre ERF, 0 for --points runs '
                             '(each group keeps B (2S-1)^2 canvases: give B to ask)')
    parser.add_argument('--ci-replicates', type=int, default=REPLICATES, metavar='R',
                        help='bootstrap replicates of the intervals')
    parser.add_argument('--ci-width', type=float, default=None, metavar='REL',
                        help='stop before --num-images (the cap) once every interval of '
                             '--ci-metrics is narrower than REL times its value')
    parser.add_argument('--ci-metrics', nargs='+', default=list(DEFAULT_CI_METRICS),
                        metavar='METRIC', help='metrics of --ci-width (effective_radius, '
                        'area_ratio.0.5, erf_trf_ratio, radial_mass.<r>...)')


def _flat(name: str) -> str:
    # the ratio's relative width is the radius's (the TRF side is a constant)
    name = 'effective_radius' if name == 'erf_trf_ratio' else name
    head, _, tail = name.partition('.')
    return f'{head}/{tail}' if tail else head


class StopRule:
    """``check(accumulator)`` after each batch; True once every interval is narrow.

    Args:
        width: the largest relative width (high - low) / |value| accepted.
        metrics: dotted metric names (``effective_radius``, ``area_ratio.0.5``).
        num_images: the cap, for the record.
        out: where the widths are printed as the run goes (None: silent).
    """

    def __init__(self, width: float, metrics: Sequence[str], num_images: int, out=sys.stdout):
        self.width, self.metrics, self.num_images = float(width), list(metrics), num_images
        self.out = out
        self.history: List[Dict] = []
        self.stopped_at: Optional[int] = None
        self._next_check = None

    def widths(self, acc) -> Dict[str, Optional[float]]:
        """``{'<target>/<group>/<metric>': relative width}`` (None: undefined yet)."""
        out: Dict[str, Optional[float]] = {}
        for target in acc.targets:
            for group in acc.groups:
                sums, cover = acc.bucket_sums[target][group], acc.bucket_cover(group)
                counts = acc.bucket_counts[group]
                reps = replicate_metrics(sums, cover, counts, acc.shape, CHECK_REPLICATES)
                used = counts > 0
                whole = _replicate_maps(sums[used], np.asarray(cover, float)[used],
                                        counts[used].astype(float), np.ones((1, used.sum())))
                value = batch_metrics(whole, acc.shape)
                for name in self.metrics:
                    key = _flat(name)
                    width = None
                    estimate = float(value[key][0]) if key in value else np.nan
                    if reps is not None and np.isfinite(estimate) and estimate != 0:
                        bounds = interval(reps[key], estimate, int(used.sum()))
                        if bounds is not None:
                            width = (bounds[1] - bounds[0]) / abs(estimate)
                    out[f'{target}/{group}/{name}'] = width
        return out

    def check(self, acc) -> bool:
        if acc is None or not acc.buckets:
            return False
        if self._next_check is None:
            self._next_check = 2 * acc.buckets  # two images per bucket: a spread to see
        if acc.images < self._next_check:
            return False
        self._next_check = (acc.images // acc.buckets + 1) * acc.buckets
        widths = self.widths(acc)
        self.history.append(dict(images=acc.images, widths=widths))
        if self.out is not None:
            shown = ', '.join(f'{k} {"-" if v is None else f"{100 * v:.1f}%"}'
                              for k, v in widths.items())
            print(f'\n[ci-width] {acc.images} images: {shown} (goal < {100 * self.width:g}%)',
                  file=self.out, flush=True)
        if all(v is not None and v < self.width for v in widths.values()):
            self.stopped_at = acc.images
            return True
        return False

    def record(self, images: int) -> Dict:
        """What ``metrics.json`` keeps (meta ``stopping``): the rule, why it stopped."""
        if self.stopped_at is not None:
            reason = (f'every interval of {", ".join(self.metrics)} narrower than '
                      f'{100 * self.width:g}% of its value at {self.stopped_at} images')
        else:
            reason = (f'the cap: {images} images (num_images {self.num_images}) before every '
                      f'interval was narrower than {100 * self.width:g}%')
        return dict(rule='ci_width', width=self.width, metrics=self.metrics, images_used=images,
                    stopped_early=self.stopped_at is not None, reason=reason,
                    widths=self.history)
