"""95 % intervals of the metrics, from resampling buckets of images.

The accumulator keeps B bucket sums per target x group (image at dataset position p
in bucket ``p % B``). A replicate draws B buckets with replacement; its mean map is
the sum of the drawn buckets' sums over their coverage, and its metrics are those of
:func:`.result.aligned_metrics` (the Gaussian fit excepted: the one costly metric,
left without an interval). The replicates of a run are kept (``bootstrap.npz``):
two runs on the same images and buckets resample the same buckets in replicate r
(one seed), so ``erf_compare`` pairs their differences replicate by replicate.

With B of about 10 a plain bootstrap interval is too narrow: a bootstrap over n
units has the spread of n - 1, and the spread itself is estimated from n units. The
interval is the estimate +- ``sqrt(n / (n - 1)) * t(n - 1) * sd``, sd the replicates'
standard deviation and n the buckets that hold images: Hesterberg's expansion (The
American Statistician 69, 2015) applied to the normal bootstrap interval. A
percentile interval would need the 0.9 % and 99.1 % points of the replicates (the
expanded levels at n = 10), which 200 replicates do not pin down; their standard
deviation they do, and 200 replicates cost a fifth of 1000 (at 1024 the metrics of
one replicate map take about 0.05-0.1 s on two busy cores).
"""
from statistics import NormalDist
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .metrics import AREA_THRESHOLDS, RADIAL_FRACTIONS, _within

LEVEL = 0.95
BUCKETS = 10
REPLICATES = 200
SEED = 0
# values of one chunk of replicate maps (float64): bounds the memory of a 1024 canvas
_CHUNK_VALUES = 1 << 23


def t_quantile(p: float, df: int) -> float:
    """Student's t quantile (Cornish-Fisher expansion; 4 digits from df = 3 on)."""
    z = NormalDist().inv_cdf(p)
    v = float(df)
    return (z + (z**3 + z) / (4 * v) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3)
            + (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / (92160 * v**4))


def expansion(n: int, level: float = LEVEL) -> float:
    """How many replicate standard deviations each side of the estimate, for n units."""
    return float(np.sqrt(n / (n - 1)) * t_quantile(1 - (1 - level) / 2, n - 1))


def multiplicities(n: int, replicates: int = REPLICATES, seed: int = SEED) -> np.ndarray:
    """(R, n) how often each of n buckets is drawn in each replicate (fixed seed)."""
    draws = np.random.default_rng(seed).integers(0, n, size=(replicates, n))
    counts = np.zeros((replicates, n))
    np.add.at(counts, (np.arange(replicates)[:, None], draws), 1)
    return counts


def batch_metrics(data: np.ndarray, area_of: Tuple[int, int],
                  thresholds: Sequence[float] = AREA_THRESHOLDS) -> Dict[str, np.ndarray]:
    """:func:`.metrics.normalized_metrics` of R normalised maps (R, H, W) at once, as
    flat keys (``area_ratio/0.5``, ``center_of_mass/0``...), NaN where undefined."""
    r, h, w = data.shape
    total = data.sum(axis=(1, 2))
    ok = total > 0
    safe = np.where(ok, total, 1.0)
    cum = np.zeros((r, h + 1, w + 1))
    cum[:, 1:, 1:] = data.cumsum(1).cumsum(2)
    cy, cx = h // 2, w // 2
    i = np.arange(1, max(h // 2, 1))
    y0, y1 = np.maximum(cy - i, 0), np.minimum(cy + i + 1, h)
    x0, x1 = np.maximum(cx - i, 0), np.minimum(cx + i + 1, w)
    shares = (cum[:, y1, x1] - cum[:, y0, x1] - cum[:, y1, x0] + cum[:, y0, x0]) / safe[:, None]
    del cum
    ah, aw = area_of
    out: Dict[str, np.ndarray] = {}
    for t in thresholds:
        above = shares > t
        found = above.any(axis=1) & ok
        side = 2 * (np.argmax(above, axis=1) + 1) + 1 if i.size else np.zeros(r)
        out[f'area_ratio/{t:g}'] = np.where(found, side / ah * side / aw, np.nan)
        out[f'area_side/{t:g}'] = np.where(found, side, np.nan)
    ys, xs = np.arange(h) - cy, np.arange(w) - cx
    out['center_of_mass/0'] = np.where(ok, data.sum(2) @ ys / safe, np.nan)
    out['center_of_mass/1'] = np.where(ok, data.sum(1) @ xs / safe, np.nan)
    squared = (ys[:, None]**2 + xs**2).astype(np.float64)
    out['effective_radius'] = np.where(
        ok, np.sqrt(np.einsum('rhw,hw->r', data, squared) / safe), np.nan)
    half = min(h, w) / 2
    for f in RADIAL_FRACTIONS:
        radius = f * half
        inside = np.einsum('rhw,hw->r', data, _within((h, w), float(radius)).astype(float))
        out[f'radial_mass/{radius:g}'] = np.where(ok, inside / safe, np.nan)
    return out


def _replicate_maps(sums: np.ndarray, cover: np.ndarray, counts: np.ndarray,
                    weights: np.ndarray) -> np.ndarray:
    """The normalised, coverage-weighted maps (as ``aligned_metrics`` weighs a mean)
    of replicates drawing buckets ``weights`` (r, n) times."""
    b, shape = sums.shape[0], sums.shape[1:]
    total = (weights @ sums.reshape(b, -1)).reshape((-1, ) + shape)
    count = (weights @ counts)[:, None, None]  # > 0: only buckets holding maps are drawn
    if cover.shape[1:] == (1, 1):
        # a fixed anchor: every map covers every offset, a weight of 1 everywhere
        data = np.log10(total / (weights @ cover.reshape(b))[:, None, None] + 1, out=total)
        scale = None
    else:
        seen = (weights @ cover.reshape(b, -1)).reshape(total.shape)
        data = np.divide(total, seen, out=total, where=seen > 0)
        data[seen == 0] = 0.0
        np.log10(data + 1, out=data)
        scale = seen / count
    peak = data.max(axis=(1, 2), keepdims=True)
    np.divide(data, peak, out=data, where=peak > 0)
    return data if scale is None else np.multiply(data, scale, out=data)


def replicate_metrics(sums: np.ndarray, cover: np.ndarray, counts: np.ndarray,
                      area_of: Tuple[int, int], replicates: int = REPLICATES,
                      seed: int = SEED) -> Optional[Dict[str, np.ndarray]]:
    """Flat metrics (R,) of R replicates over the buckets that hold maps, or None
    with fewer than two such buckets (no spread to resample).

    Args:
        sums: (B, H, W) bucket sums; cover: (B, H, W) or (B, 1, 1) their coverage;
        counts: (B,) maps per bucket.
    """
    used = np.flatnonzero(np.asarray(counts) > 0)
    if used.size < 2:
        return None
    sums, counts = sums[used], np.asarray(counts, np.float64)[used]
    cover = np.asarray(cover, np.float64)[used]
    weights = multiplicities(used.size, replicates, seed)
    chunk = max(1, _CHUNK_VALUES // int(np.prod(sums.shape[1:])))
    parts: List[Dict[str, np.ndarray]] = []
    for start in range(0, replicates, chunk):
        data = _replicate_maps(sums, cover, counts, weights[start:start + chunk])
        parts.append(batch_metrics(data, area_of))
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    out['buckets_used'] = np.array([used.size] * replicates, dtype=np.float64)
    return out


def interval(values: np.ndarray, estimate: Optional[float], buckets: int,
             level: float = LEVEL) -> Optional[List[float]]:
    """[low, high] around ``estimate`` from replicate values; None when the estimate
    is undefined or most replicates leave the metric undefined."""
    values = np.asarray(values, np.float64)
    finite = values[np.isfinite(values)]
    if estimate is None or buckets < 2 or finite.size < max(2, 0.5 * values.size):
        return None
    half = expansion(buckets, level) * float(np.std(finite, ddof=1))
    return [float(estimate) - half, float(estimate) + half]


def intervals(replicates: Mapping[str, np.ndarray], metrics: Mapping,
              level: float = LEVEL) -> Dict:
    """The ``ci95`` entry of a metrics dict: its keys, each value [low, high]."""
    buckets = int(replicates['buckets_used'][0])
    flat = {k: interval(v, lookup(metrics, k.replace('/', '.')), buckets, level)
            for k, v in replicates.items() if k != 'buckets_used'}
    return nest(flat)


def nest(flat: Mapping[str, object]) -> Dict:
    """``{'area_ratio/0.5': v, 'center_of_mass/0': v}`` -> the metrics' own layout
    (``{'area_ratio': {'0.5': v}, 'center_of_mass': [v, v]}``)."""
    out: Dict = {}
    for key, value in flat.items():
        head, _, tail = key.partition('/')
        if not tail:
            out[head] = value
        elif head == 'center_of_mass':
            out.setdefault(head, [None, None])[int(tail)] = value
        else:
            out.setdefault(head, {})[tail] = value
    return out


def lookup(metrics: Mapping, name: str):
    """A metric by its dotted name (``effective_radius``, ``area_ratio.0.5``,
    ``center_of_mass.0``) in a metrics or ``ci95`` dict; None where absent."""
    head, _, tail = name.partition('.')
    value = metrics.get(head)
    if not tail or value is None:
        return value
    if isinstance(value, list):
        return value[int(tail)] if tail.isdigit() and int(tail) < len(value) else None
    return value.get(tail)

