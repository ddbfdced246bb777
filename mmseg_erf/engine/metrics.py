"""Numbers that summarise an ERF map.

The area ratio is RepLKNet's "high-contribution area ratio" (``erf/analyze_erf.py``):
on the map normalised by ``log10(x + 1) / max``, the smallest centred square of odd
side ``2i + 1`` (``i >= 1``) whose sum divided by the total exceeds the threshold.
"""
from functools import lru_cache
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

AREA_THRESHOLDS = (0.2, 0.3, 0.5, 0.99)
# radii of the radial mass profile, as fractions of half the map's side
RADIAL_FRACTIONS = (0.125, 0.25, 0.5, 1.0)


def replknet_normalize(erf_map: np.ndarray) -> np.ndarray:
    """RepLKNet's display/metric normalisation: ``log10(x + 1) / max``."""
    data = np.log10(np.asarray(erf_map, dtype=np.float64) + 1)
    peak = data.max()
    return data / peak if peak > 0 else data


def vmamba_normalize(erf_map: np.ndarray, power: float = 0.2) -> np.ndarray:
    """VMamba's display normalisation: ``x ** 0.2 / max``."""
    data = np.power(np.asarray(erf_map, dtype=np.float64), power)
    peak = data.max()
    return data / peak if peak > 0 else data


def area_ratio(data: np.ndarray, threshold: float) -> Tuple[Optional[int], Optional[float]]:
    """RepLKNet's high-contribution area at one threshold.

    Returns:
        tuple: ``(side, side**2 / (H * W))`` or ``(None, None)`` when no square
        up to side ``2 * (H // 2 - 1) + 1`` holds that fraction (RepLKNet's loop
        bound), or when the map has no mass.
    """
    return area_ratios(data, [threshold])[0]


def area_ratios(data: np.ndarray, thresholds: Sequence[float]
                ) -> List[Tuple[Optional[int], Optional[float]]]:
    """:func:`area_ratio` at each threshold, from one pass over the map."""
    h, w = data.shape
    total = data.sum()
    if not total > 0:
        return [(None, None)] * len(thresholds)
    shares = _centred_square_shares(data, total)
    out = []
    for threshold in thresholds:
        above = shares > threshold
        if not above.any():
            out.append((None, None))
            continue
        side = 2 * (int(np.argmax(above)) + 1) + 1   # shares[k] is the square of i = k + 1
        out.append((side, side / h * side / w))
    return out


def _centred_square_shares(data: np.ndarray, total: float) -> np.ndarray:
    """Share of ``total`` inside the centred square of half-side i, for i = 1 ..
    H // 2 - 1 (RepLKNet's loop), each read off prefix sums in four lookups."""
    h, w = data.shape
    cum = np.zeros((h + 1, w + 1), dtype=np.float64)
    cum[1:, 1:] = np.asarray(data, dtype=np.float64).cumsum(0).cumsum(1)
    cy, cx = h // 2, w // 2
    i = np.arange(1, max(h // 2, 1))
    y0, y1 = np.maximum(cy - i, 0), np.minimum(cy + i + 1, h)
    x0, x1 = np.maximum(cx - i, 0), np.minimum(cx + i + 1, w)
    inside = cum[y1, x1] - cum[y0, x1] - cum[y1, x0] + cum[y0, x0]
    return inside / total


@lru_cache(maxsize=8)
def _within(shape: Tuple[int, int], radius: float) -> np.ndarray:
    """Pixels within ``radius`` of the centre (H // 2, W // 2), a read-only mask: every
    map of a run has one shape, so the distance grid is built once per radius."""
    h, w = shape
    yy, xx = np.meshgrid(np.arange(h) - h // 2, np.arange(w) - w // 2, indexing='ij')
    mask = np.hypot(yy, xx) <= radius
    mask.setflags(write=False)
    return mask


def radial_mass(data: np.ndarray, radii: Sequence[float]) -> Dict[str, float]:
    """Fraction of the mass within each Euclidean radius (pixels) of the centre."""
    total = data.sum()
    shape = tuple(data.shape)
    return {f'{r:g}': float(data[_within(shape, float(r))].sum() / total) if total > 0
            else float('nan') for r in radii}


def erf_metrics(erf_map: np.ndarray,
                thresholds: Sequence[float] = AREA_THRESHOLDS) -> Dict[str, object]:
    """All metrics of one raw mean ERF map, computed on its RepLKNet normalisation.

    Returns:
        dict: ``area_ratio`` and ``area_side`` per threshold; ``center_of_mass``
        as (dy, dx) pixels from the centre ``(H // 2, W // 2)``; ``radial_mass``
        (fraction within radius r px, r = fractions of half the side);
        ``effective_radius`` = root-mean-square distance from the centre (px);
        ``shape``: :func:`.shape.shape_metrics` of the raw map.
    """
    from .shape import shape_metrics
    metrics = normalized_metrics(replknet_normalize(erf_map), thresholds)
    metrics['shape'] = shape_metrics(erf_map)
    return metrics


def normalized_metrics(data: np.ndarray, thresholds: Sequence[float] = AREA_THRESHOLDS,
                       area_of: Optional[Tuple[int, int]] = None) -> Dict[str, object]:
    """The metrics of :func:`erf_metrics` but ``shape``, on an already normalised map.

    Args:
        area_of: (H, W) the area ratios are fractions of; default the map's own
            shape (an aligned canvas passes the input size).
    """
    h, w = data.shape
    total = data.sum()
    areas = {f'{t:g}': area for t, area in zip(thresholds, area_ratios(data, thresholds))}
    ah, aw = area_of or (h, w)
    metrics: Dict[str, object] = {
        'area_ratio': {t: None if side is None else side / ah * side / aw
                       for t, (side, _) in areas.items()},
        'area_side': {t: side for t, (side, _) in areas.items()},
    }
    if total > 0:
        # broadcast offsets give the products of a coordinate grid without building it
        ys, xs = np.arange(h) - h // 2, np.arange(w) - w // 2
        metrics['center_of_mass'] = [float((data * ys[:, None]).sum() / total),
                                     float((data * xs).sum() / total)]
        metrics['effective_radius'] = float(
            np.sqrt((data * (ys[:, None]**2 + xs**2)).sum() / total))
    else:
        metrics['center_of_mass'] = [None, None]
        metrics['effective_radius'] = None
    half = min(h, w) / 2
    metrics['radial_mass'] = radial_mass(data, [f * half for f in RADIAL_FRACTIONS])
    return metrics
