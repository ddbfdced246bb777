"""PointResult: aligned mean maps per group, their coverage, counts and metrics.

Run directory of a point run::

    aligned_<target>__<group>.npy   mean canvas (2S-1 or the window), NaN where unseen
    coverage__<group>.npy           maps that covered each offset (int64)
    groups_<target>.png             every group's map, sorted by effective radius
    groups_chart_<target>.png       area@0.5 and effective radius per group, with counts
    position_grid_<target>.png      (grid points) the K x K maps where their points are
    metrics.json                    {"points": spec, "groups": {G: count},
                                     "targets": {T: {G: metrics}}, ...}

Metrics of an aligned map weight each offset by the fraction of the group's maps
that covered it (see :func:`aligned_metrics`).
"""
import json
import os
from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Tuple

import numpy as np

from .metrics import normalized_metrics, replknet_normalize
from .points import PointSpec
from .shape import shape_metrics

METRICS_FILE = 'metrics.json'
# groups with fewer points than this are marked in tables and figures
FEW_POINTS = 10


def safe_name(name: str) -> str:
    return ''.join(c if c.isalnum() or c in '.-' else '_' for c in name.replace('/', '~'))


def aligned_filename(target: str, group: str) -> str:
    return f'aligned_{safe_name(target)}__{safe_name(group)}.npy'


def coverage_filename(group: str) -> str:
    return f'coverage__{safe_name(group)}.npy'


def full_coverage_side(coverage: np.ndarray, count: int) -> int:
    """Side of the largest centred square whose every offset all ``count`` maps saw."""
    h, w = coverage.shape
    cy, cx = h // 2, w // 2
    side = 0
    for r in range(min(cy, cx) + 1):
        if (coverage[cy - r:cy + r + 1, cx - r:cx + r + 1] < count).any():
            break
        side = 2 * r + 1
    return side


def aligned_metrics(mean: np.ndarray, coverage: np.ndarray, count: int,
                    input_size: Tuple[int, int]) -> Dict[str, object]:
    """Metrics of an aligned mean map, each offset weighted by its coverage fraction.

    The offset's mean is normalised like any map (RepLKNet's log10(x + 1) / max)
    and multiplied by ``coverage / count``: an offset every map saw counts fully,
    one seen by a tenth of them a tenth, an unseen one not at all. Area ratios
    are fractions of the input area (H x W), not of the larger canvas, so they
    compare with those of centre-point runs. ``full_coverage_side`` is the side of
    the centred square seen by every map (inside it, weights are all 1).
    """
    if count == 0:
        weights = np.zeros(mean.shape)
    else:
        weights = coverage / float(count)
    values = np.where(np.isfinite(mean), mean, 0.0)
    data = replknet_normalize(values) * weights
    metrics = normalized_metrics(data, area_of=input_size)
    metrics['shape'] = shape_metrics(values, weights)
    metrics['count'] = int(count)
    metrics['full_coverage_side'] = full_coverage_side(coverage, count)
    return metrics


@dataclass(frozen=True)
class PointResult:
    """The grouped, aligned ERF maps of one point run.

    Attributes:
        maps: target -> group -> aligned mean canvas (NaN where no map covered).
        coverage: group -> int64 canvas of covering maps.
        counts: group -> points averaged.
        zero_maps: target -> group -> points whose map was all zero (response <= 0).
        num_images, skipped, input_size, model_name, meta: as in ERFResult.
        skipped_points: points with a non-finite map (left out of every group).
        points: the :class:`PointSpec` of the run.
        metrics: target -> group -> :func:`aligned_metrics` (computed when absent).
    """
    maps: Mapping[str, Mapping[str, np.ndarray]]
    coverage: Mapping[str, np.ndarray]
    counts: Mapping[str, int]
    zero_maps: Mapping[str, Mapping[str, int]]
    num_images: int
    skipped: int
    skipped_points: int
    input_size: Tuple[int, int]
    points: PointSpec
    model_name: str = ''
    meta: Mapping[str, object] = field(default_factory=dict)
    metrics: Mapping[str, Mapping[str, Dict]] = field(default=None)

    def __post_init__(self):
        object.__setattr__(self, 'input_size', tuple(int(s) for s in self.input_size))
        if self.metrics is None:
            metrics = {}
            for target, groups in self.maps.items():
                metrics[target] = {}
                for group, mean in groups.items():
                    m = aligned_metrics(mean, self.coverage[group], self.counts[group],
                                        self.input_size)
                    m['zero_maps'] = int(self.zero_maps[target][group])
                    metrics[target][group] = m
            object.__setattr__(self, 'metrics', metrics)

    @classmethod
    def from_accumulator(cls, acc, points: PointSpec, model_name: str = '',
                         meta: Optional[Mapping] = None) -> 'PointResult':
        return cls(maps={t: {g: acc.mean(t, g) for g in acc.groups} for t in acc.targets},
                   coverage={g: acc.coverage[g].copy() for g in acc.groups},
                   counts=dict(acc.counts),
                   zero_maps={t: dict(acc.zero_maps[t]) for t in acc.targets},
                   num_images=acc.images, skipped=acc.skipped,
                   skipped_points=acc.skipped_points, input_size=acc.shape, points=points,
                   model_name=model_name, meta=dict(meta or {}))

    @property
    def targets(self):
        return list(self.maps)

    @property
    def groups(self):
        return list(self.counts)

    def canvas_shape(self) -> Tuple[int, int]:
        return next(iter(self.coverage.values())).shape if self.coverage else (0, 0)

    def to_json(self) -> dict:
        return {
            'kind': 'points', 'num_images': self.num_images, 'skipped': self.skipped,
            'skipped_points': self.skipped_points, 'input_size': list(self.input_size),
            'canvas_size': list(self.canvas_shape()), 'model': self.model_name,
            'meta': dict(self.meta), 'points': self.points.to_json(),
            'groups': dict(self.counts), 'few_points': FEW_POINTS,
            'targets': {t: {g: self.metrics[t][g] for g in self.maps[t]}
                        for t in self.maps},
        }

    def write(self, out_dir: str, images: bool = True) -> None:
        """Write the run directory (maps, coverage, metrics.json and the figures)."""
        os.makedirs(out_dir, exist_ok=True)
        for group, cover in self.coverage.items():
            np.save(os.path.join(out_dir, coverage_filename(group)), cover)
        for target, groups in self.maps.items():
            for group, mean in groups.items():
                np.save(os.path.join(out_dir, aligned_filename(target, group)), mean)
        if images and self.counts:
            from .point_plots import write_point_figures
            write_point_figures(self, out_dir)
        tmp = os.path.join(out_dir, METRICS_FILE + '.tmp')
        with open(tmp, 'w') as f:
            json.dump(self.to_json(), f, indent=2)
        os.replace(tmp, os.path.join(out_dir, METRICS_FILE))

    @classmethod
    def read(cls, out_dir: str) -> 'PointResult':
        with open(os.path.join(out_dir, METRICS_FILE)) as f:
            info = json.load(f)
        if info.get('kind') != 'points':
            raise ValueError(f'{out_dir} is not a point run (run with --points)')
        groups = info['groups']
        spec = info['points']
        spec['class_names'] = tuple(spec.get('class_names', ()))
        return cls(
            maps={t: {g: np.load(os.path.join(out_dir, aligned_filename(t, g)))
                      for g in groups} for t in info['targets']},
            coverage={g: np.load(os.path.join(out_dir, coverage_filename(g)))
                      for g in groups},
            counts={g: int(c) for g, c in groups.items()},
            zero_maps={t: {g: m['zero_maps'] for g, m in gm.items()}
                       for t, gm in info['targets'].items()},
            num_images=info['num_images'], skipped=info['skipped'],
            skipped_points=info['skipped_points'], input_size=tuple(info['input_size']),
            points=PointSpec(**spec), model_name=info.get('model', ''),
            meta=info.get('meta', {}), metrics=info['targets'])


def is_point_run(out_dir: str) -> bool:
    path = os.path.join(out_dir, METRICS_FILE)
    if not os.path.isfile(path):
        return False
    with open(path) as f:
        return json.load(f).get('kind') == 'points'
