"""ERFResult: the one result of every run, and the run directory it is written to.

A result holds mean maps per target and group on aligned canvases, their coverage
and counts, and the metrics of each. Every artefact a run writes comes from here,
so the hook, the CLI and the API cannot drift apart. Two layouts, chosen by the
point set (one rule, :meth:`ERFResult.is_classic`):

The classic ERF (the centre kind: one group, ``centre``, whose canvas is the image)::

    erf_<target>.npy   raw mean map (S x S, float64), never post-processed
    erf_<target>.png   heatmap (RepLKNet normalisation) with a colour bar
    metrics.json       {"num_images", "skipped", "input_size", "targets": {T: metrics}, ...}
    bootstrap.npz      with intervals: each metric's replicates (paired comparisons)

Every other point set (grid, per-class, boundary, predicted)::

    aligned_<target>__<group>.npy   mean canvas (2S-1 or the window), NaN where unseen
    coverage__<group>.npy           maps that covered each offset (int64)
    groups_<target>.png, groups_chart_<target>.png, position_grid_<target>.png (grid)
    metrics.json                    {"kind": "points", "points": spec, "groups": {G: count},
                                     "targets": {T: {G: metrics}}, ...}

Every file is written beside its final name and renamed into place; ``metrics.json``
comes last, so a directory with one holds a whole run.
"""
import json
import os
from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Tuple

import numpy as np

from .files import (METRICS_FILE, aligned_filename, coverage_filename, replacing,
                    target_filename)
from .metrics import normalized_metrics, replknet_normalize
from .plotting import render_heatmap, save_heatmap
from .point_plots import FEW_POINTS, write_point_figures
from .points import PointSpec
from .shape import shape_metrics
from .stats import LEVEL, REPLICATES, SEED, intervals, replicate_metrics
from .trf import erf_trf_ratio, trf_metrics

CENTRE = 'centre'
BOOTSTRAP_FILE = 'bootstrap.npz'


def full_coverage_side(coverage: np.ndarray, count: int) -> int:
    """Side of the largest centred square whose every offset all ``count`` maps saw."""
    h, w = coverage.shape
    cy, cx = h // 2, w // 2
    side = 0
    for r in range(min(cy, cx, h - 1 - cy, w - 1 - cx) + 1):
        if (coverage[cy - r:cy + r + 1, cx - r:cx + r + 1] < count).any():
            break
        side = 2 * r + 1
    return side


def aligned_metrics(mean: np.ndarray, coverage: np.ndarray, count: int,
                    input_size: Tuple[int, int]) -> Dict[str, object]:
    """Metrics of a mean map, each offset weighted by its coverage fraction.

    The offset's mean is normalised like any map (RepLKNet's log10(x + 1) / max)
    and multiplied by ``coverage / count``: an offset every map saw counts fully,
    one seen by a tenth of them a tenth, an unseen one not at all. Area ratios
    are fractions of the input area (H x W), not of a larger canvas, so every
    point set compares with the classic ERF, whose canvas is the image and whose
    weights are all 1 (then these are exactly RepLKNet's numbers).
    ``full_coverage_side`` is the side of the centred square seen by every map.
    """
    weights = np.zeros(mean.shape) if count == 0 else coverage / float(count)
    values = np.where(np.isfinite(mean), mean, 0.0)
    metrics = normalized_metrics(replknet_normalize(values) * weights, area_of=input_size)
    metrics['shape'] = shape_metrics(values, weights)
    metrics['count'] = int(count)
    metrics['full_coverage_side'] = full_coverage_side(coverage, count)
    return metrics


@dataclass(frozen=True)
class ERFResult:
    """The mean ERF maps of one run, per target and group.

    Attributes:
        maps: target -> group -> mean canvas (NaN where no map covered it). The
            classic ERF has one group, ``'centre'``, whose canvas is the S x S image:
            ``result.maps['backbone.3']['centre']`` (or ``result.map('backbone.3')``).
        coverage: group -> int64 canvas of covering maps.
        counts: group -> points averaged.
        zero_maps: target -> group -> points whose map was all zero (response <= 0).
        num_images: images used (finite maps, or no point to draw).
        skipped: images unreadable or whose every map was non-finite.
        skipped_points: points with a non-finite map (left out of every group).
        input_size: (H, W) of every input.
        points: the :class:`PointSpec` of the run.
        model_name: shown in titles.
        meta: anything else worth keeping (class index, checkpoint, options...).
        metrics: target -> group -> :func:`aligned_metrics` (computed when absent),
            with ``ci95`` (from ``replicates``) and ``trf`` / ``erf_trf_ratio`` (from
            ``trf``) when those are given.
        replicates: target -> group -> flat metric -> (R,) bootstrap replicates
            (:func:`.stats.replicate_metrics`); None without intervals.
        trf: target -> group -> :func:`.trf.trf_metrics`; None when unknown.
    """
    maps: Mapping[str, Mapping[str, np.ndarray]]
    coverage: Mapping[str, np.ndarray]
    counts: Mapping[str, int]
    zero_maps: Mapping[str, Mapping[str, int]]
    num_images: int
    skipped: int
    skipped_points: int
    input_size: Tuple[int, int]
    points: PointSpec = PointSpec()
    model_name: str = ''
    meta: Mapping[str, object] = field(default_factory=dict)
    metrics: Mapping[str, Mapping[str, Dict]] = field(default=None)
    replicates: Optional[Mapping[str, Mapping[str, Mapping[str, np.ndarray]]]] = None
    trf: Optional[Mapping[str, Mapping[str, Dict]]] = None

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
                    self._add_trf_and_intervals(m, target, group)
                    metrics[target][group] = m
            object.__setattr__(self, 'metrics', metrics)

    def _add_trf_and_intervals(self, m: Dict, target: str, group: str) -> None:
        trf = (self.trf or {}).get(target, {}).get(group)
        if trf is not None:
            m['trf'] = dict(trf)
            m['erf_trf_ratio'] = erf_trf_ratio(m.get('effective_radius'), trf['side'])
        reps = (self.replicates or {}).get(target, {}).get(group)
        if reps is not None:
            ci = intervals(reps, m, LEVEL)
            if trf is not None:
                radius = ci.get('effective_radius')
                ci['erf_trf_ratio'] = None if radius is None or not trf['side'] else \
                    [erf_trf_ratio(v, trf['side']) for v in radius]
            m['ci95'] = ci

    @classmethod
    def from_accumulator(cls, acc, points: PointSpec, model_name: str = '',
                         meta: Optional[Mapping] = None,
                         replicates: int = REPLICATES) -> 'ERFResult':
        """The result of an accumulator; its buckets (if any) give the intervals from
        ``replicates`` bootstrap replicates, its support canvases the TRF."""
        if points.fixed_anchor:
            acc.open_group(CENTRE)  # present even when no image gave a finite map
        info = dict(meta or {}, backwards=acc.backwards, points_computed=acc.points)
        origin = acc.extents[:2]  # the response point's canvas cell
        trf = {t: {g: trf_metrics(acc.support[t][g], origin) for g in acc.groups}
               for t in acc.targets}
        reps = None
        if acc.buckets:
            info['intervals'] = dict(
                level=LEVEL, buckets=acc.buckets, replicates=int(replicates), seed=SEED,
                bucket_counts={g: acc.bucket_counts[g].tolist() for g in acc.groups},
                method='bootstrap over image buckets (dataset position % buckets), '
                       'estimate +- sqrt(n/(n-1)) t(n-1) sd')
            reps = {t: {g: replicate_metrics(acc.bucket_sums[t][g], acc.bucket_cover(g),
                                             acc.bucket_counts[g], acc.shape, replicates)
                        for g in acc.groups} for t in acc.targets}
        return cls(maps={t: {g: acc.mean(t, g) for g in acc.groups} for t in acc.targets},
                   coverage={g: acc.coverage[g].copy() for g in acc.groups},
                   counts=dict(acc.counts),
                   zero_maps={t: dict(acc.zero_maps[t]) for t in acc.targets},
                   num_images=acc.images, skipped=acc.skipped,
                   skipped_points=acc.skipped_points, input_size=acc.shape, points=points,
                   model_name=model_name, meta=info, replicates=reps, trf=trf)

    @classmethod
    def classic(cls, maps: Mapping[str, np.ndarray], num_images: int, skipped: int = 0,
                input_size: Optional[Tuple[int, int]] = None, model_name: str = '',
                meta: Optional[Mapping] = None) -> 'ERFResult':
        """The result of the classic (centre) ERF from its mean maps ``{target: (H, W)}``
        (every map averaged over all ``num_images``, as for a run read back or resampled)."""
        maps = {t: np.asarray(m, dtype=np.float64) for t, m in maps.items()}
        shape = tuple(next(iter(maps.values())).shape) if maps else tuple(input_size)
        return cls(maps={t: {CENTRE: m} for t, m in maps.items()},
                   coverage={CENTRE: np.full(shape, num_images, dtype=np.int64)},
                   counts={CENTRE: int(num_images)},
                   zero_maps={t: {CENTRE: 0} for t in maps}, num_images=num_images,
                   skipped=skipped, skipped_points=0, input_size=input_size or shape,
                   model_name=model_name, meta=dict(meta or {}))

    @property
    def targets(self):
        return list(self.maps)

    @property
    def groups(self):
        return list(self.counts)

    @property
    def is_classic(self) -> bool:
        """The classic ERF layout: the centre kind's one group on the image frame."""
        return self.points.fixed_anchor

    def _only_group(self, group: Optional[str]) -> str:
        if group is not None:
            return group
        if len(self.groups) != 1:
            raise ValueError(f'this run has {len(self.groups)} groups '
                             f'({", ".join(self.groups[:5])}...); name one')
        return self.groups[0]

    def map(self, target: str, group: Optional[str] = None) -> np.ndarray:
        """The mean map of one target and group (default: the run's only group)."""
        return self.maps[target][self._only_group(group)]

    def metrics_of(self, target: str, group: Optional[str] = None) -> Dict:
        """The metrics of one target and group (default: the run's only group)."""
        return self.metrics[target][self._only_group(group)]

    def canvas_shape(self) -> Tuple[int, int]:
        return next(iter(self.coverage.values())).shape if self.coverage else (0, 0)

    def title(self, target: str) -> str:
        h, w = self.input_size
        model = f'{self.model_name}  ' if self.model_name else ''
        return f'{model}{target}\nN={self.num_images} images, {h}x{w}'

    def heatmap(self, target: str, normalization: str = 'replknet') -> np.ndarray:
        """RGB uint8 heatmap of one target's only group, as written to ``erf_<target>.png``."""
        return render_heatmap(self.map(target), self.title(target), normalization,
                              metrics=self.metrics_of(target))

    def to_json(self) -> dict:
        info = {
            'num_images': self.num_images, 'skipped': self.skipped,
            'skipped_points': self.skipped_points, 'input_size': list(self.input_size),
            'canvas_size': list(self.canvas_shape()), 'model': self.model_name,
            'meta': dict(self.meta), 'points': self.points.to_json(),
            'groups': dict(self.counts),
        }
        if self.is_classic:
            info['targets'] = {t: self.metrics[t][CENTRE] for t in self.maps}
        else:
            info.update(kind='points', few_points=FEW_POINTS)
            info['targets'] = {t: dict(self.metrics[t]) for t in self.maps}
        return info

    def write(self, out_dir: str, images: bool = True) -> Dict[str, np.ndarray]:
        """Write the run directory; returns ``{target: heatmap RGB}`` of a classic run
        (empty without images, or for other point sets, whose figures are files only)."""
        os.makedirs(out_dir, exist_ok=True)
        heatmaps = {}
        if self.is_classic:
            for target in self.maps:
                erf_map = self.map(target, CENTRE)
                _save_array(os.path.join(out_dir, target_filename(target, '.npy')), erf_map)
                if images:
                    heatmaps[target] = self.heatmap(target)
                    with replacing(os.path.join(out_dir,
                                                target_filename(target, '.png'))) as tmp:
                        save_heatmap(erf_map, tmp, rgb=heatmaps[target])
        else:
            for group, cover in self.coverage.items():
                _save_array(os.path.join(out_dir, coverage_filename(group)), cover)
            for target, groups in self.maps.items():
                for group, mean in groups.items():
                    _save_array(os.path.join(out_dir, aligned_filename(target, group)), mean)
            if images and self.counts:
                write_point_figures(self, out_dir)
        if self.replicates:
            _save_replicates(os.path.join(out_dir, BOOTSTRAP_FILE), self.replicates)
        with replacing(os.path.join(out_dir, METRICS_FILE)) as tmp:
            with open(tmp, 'w') as f:
                json.dump(self.to_json(), f, indent=2)
        return heatmaps

    @classmethod
    def read(cls, out_dir: str) -> 'ERFResult':
        """Read a run directory written by :meth:`write` (by any of the three doors, and
        by earlier versions: a classic run's ``metrics.json`` without ``points``)."""
        path = os.path.join(out_dir, METRICS_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f'{path} not found: {out_dir} is not an ERF run '
                                    f'directory (run tools/erf_seg.py first)')
        with open(path) as f:
            info = json.load(f)
        meta = info.get('meta', {})
        replicates = _load_replicates(os.path.join(out_dir, BOOTSTRAP_FILE))
        spec = dict(info.get('points') or {'point': meta.get('point', (0.5, 0.5))})
        spec['class_names'] = tuple(spec.get('class_names', ()))
        spec = PointSpec(**spec)
        size = tuple(info['input_size'])
        if info.get('kind') != 'points':
            maps = {t: {CENTRE: np.load(os.path.join(out_dir, target_filename(t, '.npy')))}
                    for t in info['targets']}
            count = int(info.get('groups', {}).get(CENTRE, info['num_images']))
            shape = next(iter(maps.values()))[CENTRE].shape if maps else size
            return cls(maps=maps, coverage={CENTRE: np.full(shape, count, dtype=np.int64)},
                       counts={CENTRE: count},
                       zero_maps={t: {CENTRE: m.get('zero_maps', 0)}
                                  for t, m in info['targets'].items()},
                       num_images=info['num_images'], skipped=info['skipped'],
                       skipped_points=info.get('skipped_points', 0), input_size=size,
                       points=spec, model_name=info.get('model', ''), meta=meta,
                       metrics={t: {CENTRE: m} for t, m in info['targets'].items()},
                       replicates=replicates)
        groups = info['groups']
        return cls(
            maps={t: {g: np.load(os.path.join(out_dir, aligned_filename(t, g)))
                      for g in groups} for t in info['targets']},
            coverage={g: np.load(os.path.join(out_dir, coverage_filename(g)))
                      for g in groups},
            counts={g: int(c) for g, c in groups.items()},
            zero_maps={t: {g: m['zero_maps'] for g, m in gm.items()}
                       for t, gm in info['targets'].items()},
            num_images=info['num_images'], skipped=info['skipped'],
            skipped_points=info['skipped_points'], input_size=size, points=spec,
            model_name=info.get('model', ''), meta=meta, metrics=info['targets'],
            replicates=replicates)


def _save_array(path: str, array: np.ndarray) -> None:
    with replacing(path) as tmp:
        with open(tmp, 'wb') as f:
            np.save(f, array)


# '|' is in no target, group or metric name (groups are class names: '/' is taken)
_SEP = '|'


def _save_replicates(path: str, replicates) -> None:
    arrays = {_SEP.join((t, g, k)): v for t, groups in replicates.items()
              for g, reps in groups.items() if reps is not None for k, v in reps.items()}
    with replacing(path) as tmp:
        with open(tmp, 'wb') as f:
            np.savez(f, **arrays)


def _load_replicates(path: str):
    """target -> group -> flat metric -> replicates, or None without the file."""
    if not os.path.isfile(path):
        return None
    out: Dict = {}
    with np.load(path, allow_pickle=False) as data:
        for key in data.files:
            target, group, name = key.split(_SEP)
            out.setdefault(target, {}).setdefault(group, {})[name] = data[key]
    return out


def is_point_run(out_dir: str) -> bool:
    """Whether ``out_dir`` holds a run of grouped points (not the classic layout)."""
    path = os.path.join(out_dir, METRICS_FILE)
    if not os.path.isfile(path):
        return False
    with open(path) as f:
        return json.load(f).get('kind') == 'points'
