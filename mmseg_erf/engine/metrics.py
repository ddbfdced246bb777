"""Numbers that summarise an ERF map.

The area ratio is RepLKNet's "high-contribution area ratio" (``erf/analyze_erf.py``):
on the map normalised by ``log10(x + 1) / max``, the smallest centred square of odd
side ``2i + 1`` (``i >= 1``) whose sum divided by the total exceeds the threshold.
"""
from typing import Dict, Optional, Sequence, Tuple

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
    h, w = data.shape
    total = data.sum()
    if not total > 0:
        return None, None
    # prefix sums make each centred square an O(1) query instead of a slice sum
    cum = np.zeros((h + 1, w + 1), dtype=np.float64)
    cum[1:, 1:] = np.asarray(data, dtype=np.float64).cumsum(0).cumsum(1)
    cy, cx = h // 2, w // 2
    for i in range(1, h // 2):
        y0, y1 = max(cy - i, 0), min(cy + i + 1, h)
        x0, x1 = max(cx - i, 0), min(cx + i + 1, w)
        inside = cum[y1, x1] - cum[y0, x1] - cum[y1, x0] + cum[y0, x0]
        if inside / total > threshold:
            side = 2 * i + 1
            return side, side / h * side / w
    return None, None


def _distances(shape: Tuple[int, int]) -> np.ndarray:
    h, w = shape
    yy, xx = np.meshgrid(np.arange(h) - h // 2, np.arange(w) - w // 2, indexing='ij')
    return np.hypot(yy, xx)


def radial_mass(data: np.ndarray, radii: Sequence[float]) -> Dict[str, float]:
    """Fraction of the mass within each Euclidean radius (pixels) of the centre."""
    total = data.sum()
    dist = _distances(data.shape)
    return {f'{r:g}': float(data[dist <= r].sum() / total) if total > 0 else float('nan')
            for r in radii}


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
    areas = {f'{t:g}': area_ratio(data, t) for t in thresholds}
    ah, aw = area_of or (h, w)
    metrics: Dict[str, object] = {
        'area_ratio': {t: None if side is None else side / ah * side / aw
                       for t, (side, _) in areas.items()},
        'area_side': {t: side for t, (side, _) in areas.items()},
    }
    if total > 0:
        yy, xx = np.meshgrid(np.arange(h) - h // 2, np.arange(w) - w // 2, indexing='ij')
        metrics['center_of_mass'] = [float((data * yy).sum() / total),
                                     float((data * xx).sum() / total)]
        metrics['effective_radius'] = float(
            np.sqrt((data * (yy**2 + xx**2)).sum() / total))
    else:
        metrics['center_of_mass'] = [None, None]
        metrics['effective_radius'] = None
    half = min(h, w) / 2
    metrics['radial_mass'] = radial_mass(data, [f * half for f in RADIAL_FRACTIONS])
    return metrics
