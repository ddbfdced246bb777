"""Shape of an ERF map: second moments, orientation, anisotropy and a 2-D Gaussian fit.

Area ratios say how large an ERF is; these say what shape it has, which is what
per-position and per-class maps differ in (a scan direction stretches a map along
one axis, a window clips it to a square). Everything is computed on the raw map
divided by its peak (linear units, the quantity a Gaussian ERF model describes),
with optional per-pixel weights (coverage fractions of an aligned map).

Coordinates: y down the rows, x along the columns, in pixels. Orientation is the
angle of the major axis from the +x axis, in degrees in (-90, 90], positive towards
+y (clockwise on screen, as images are drawn with y down).
"""
import math
from typing import Dict, Optional, Tuple

import numpy as np

_MAX_ITERATIONS = 60
# above this many pixels the Gaussian is fitted to block means (the fit's cost grows
# with the pixels; a 2047 x 2047 canvas would take seconds per map)
_FIT_PIXELS = 1 << 18


def _grid(shape: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray]:
    h, w = shape
    return np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64),
                       indexing='ij')


def second_moments(data: np.ndarray, weights: Optional[np.ndarray] = None) -> Optional[Dict]:
    """Mass-weighted mean and covariance of the pixel coordinates.

    Returns:
        dict or None (no mass): ``mean`` (y, x), ``cov`` 2x2 [[yy, yx], [xy, xx]].
    """
    mass = np.asarray(data, dtype=np.float64)
    if weights is not None:
        mass = mass * weights
    total = mass.sum()
    if not total > 0:
        return None
    yy, xx = _grid(mass.shape)
    my, mx = (mass * yy).sum() / total, (mass * xx).sum() / total
    dy, dx = yy - my, xx - mx
    cov = np.array([[(mass * dy * dy).sum(), (mass * dy * dx).sum()],
                    [(mass * dy * dx).sum(), (mass * dx * dx).sum()]]) / total
    return dict(mean=(float(my), float(mx)), cov=cov)


def covariance_shape(cov: np.ndarray) -> Dict[str, float]:
    """Sizes along y and x, principal sizes, orientation and anisotropy of a covariance."""
    var_y, var_x, cov_yx = float(cov[0, 0]), float(cov[1, 1]), float(cov[0, 1])
    half_trace = (var_x + var_y) / 2
    root = math.hypot((var_x - var_y) / 2, cov_yx)
    major, minor = half_trace + root, max(half_trace - root, 0.0)
    # major axis angle from +x towards +y; 0 for an isotropic map by convention
    angle = 0.5 * math.degrees(math.atan2(2 * cov_yx, var_x - var_y)) if root > 0 else 0.0
    if angle <= -90:
        angle += 180
    return dict(sigma_y=math.sqrt(max(var_y, 0.0)), sigma_x=math.sqrt(max(var_x, 0.0)),
                sigma_major=math.sqrt(major), sigma_minor=math.sqrt(minor),
                orientation_deg=angle,
                anisotropy=math.sqrt(major / minor) if minor > 0 else None)


def _gaussian(params: np.ndarray, yy: np.ndarray, xx: np.ndarray):
    """Values and Jacobian of A exp(-q/2), q = a dy^2 + 2 b dy dx + c dx^2."""
    amp, my, mx, a, b, c = params
    dy, dx = yy - my, xx - mx
    e = np.exp(-0.5 * (a * dy * dy + 2 * b * dy * dx + c * dx * dx))
    g = amp * e
    jac = np.stack([e, g * (a * dy + b * dx), g * (b * dy + c * dx), -0.5 * g * dy * dy,
                    -g * dy * dx, -0.5 * g * dx * dx], axis=-1)
    return g, jac


def fit_gaussian(data: np.ndarray, weights: Optional[np.ndarray] = None) -> Optional[Dict]:
    """Least-squares fit of ``A exp(-(d^T P d) / 2)`` to the map (Levenberg-Marquardt).

    Minimises ``sum w (g - data)^2`` over amplitude, centre and precision matrix P,
    started from the map's moments. ``r2`` is the weighted coefficient of
    determination ``1 - SS_res / SS_tot`` (1 for a Gaussian map).

    Returns:
        dict or None (no mass): ``amplitude`` (in units of the map), ``center``
        (y, x), ``sigma_y``, ``sigma_x``, ``sigma_major``, ``sigma_minor``,
        ``orientation_deg``, ``anisotropy`` of the fitted covariance, ``r2``.
    """
    values = np.asarray(data, dtype=np.float64)
    moments = second_moments(values, weights)
    if moments is None:
        return None
    w = np.ones_like(values) if weights is None else np.asarray(weights, dtype=np.float64)
    keep = w > 0
    yy, xx = _grid(values.shape)
    yy, xx, target, w = yy[keep], xx[keep], values[keep], w[keep]
    scale = target.max()
    target = target / scale
    cov = moments['cov'] + np.eye(2) * 1e-3  # a one-pixel map has zero variance
    prec = np.linalg.inv(cov)
    params = np.array([1.0, *moments['mean'], prec[0, 0], prec[0, 1], prec[1, 1]])
    sqrt_w = np.sqrt(w)

    def cost(p):
        g, _ = _gaussian(p, yy, xx)
        return float((w * (g - target) ** 2).sum())

    current, damping = cost(params), 1e-3
    for _ in range(_MAX_ITERATIONS):
        g, jac = _gaussian(params, yy, xx)
        jw = jac * sqrt_w[:, None]
        normal = jw.T @ jw
        gradient = jw.T @ ((target - g) * sqrt_w)
        improved = False
        while damping < 1e12:
            step = np.linalg.solve(normal + damping * np.diag(np.diag(normal) + 1e-12),
                                   gradient)
            trial = params + step
            positive = trial[3] > 0 and trial[5] > 0 and trial[3] * trial[5] > trial[4] ** 2
            if positive and (new := cost(trial)) <= current:
                improved = current - new > 1e-14 * max(current, 1e-300)
                params, current, damping = trial, new, max(damping / 10, 1e-12)
                break
            damping *= 10
        if not improved:
            break
    fitted = np.linalg.inv(np.array([[params[3], params[4]], [params[4], params[5]]]))
    mean_t = (w * target).sum() / w.sum()
    total = float((w * (target - mean_t) ** 2).sum())
    out = dict(amplitude=float(params[0] * scale), center=(float(params[1]), float(params[2])))
    out.update(covariance_shape(fitted))
    out['r2'] = 1 - current / total if total > 0 else (1.0 if current == 0 else 0.0)
    return out


def _block_means(data: np.ndarray, weights: Optional[np.ndarray], factor: int):
    """Weighted block means of ``factor x factor`` blocks (edges padded with weight 0),
    and the block weights (mean weight)."""
    h, w = data.shape
    ph, pw = -h % factor, -w % factor
    wts = np.ones_like(data) if weights is None else np.asarray(weights, dtype=np.float64)
    wts = np.pad(wts, ((0, ph), (0, pw)))
    vals = np.pad(data, ((0, ph), (0, pw))) * wts
    shape = ((h + ph) // factor, factor, (w + pw) // factor, factor)
    wsum = wts.reshape(shape).sum(axis=(1, 3))
    means = np.divide(vals.reshape(shape).sum(axis=(1, 3)), wsum, out=np.zeros_like(wsum),
                      where=wsum > 0)
    return means, wsum / factor**2


def _binned_fit(data: np.ndarray, weights: Optional[np.ndarray]) -> Optional[Dict]:
    """:func:`fit_gaussian` in the map's pixel units, on block means when it is large."""
    factor = max(1, math.ceil(math.sqrt(data.size / _FIT_PIXELS)))
    if factor == 1:
        fit = fit_gaussian(data, weights)
    else:
        means, block_weights = _block_means(data, weights, factor)
        fit = fit_gaussian(means, block_weights)
        if fit is not None:
            # block i covers pixels [i f, (i + 1) f): its centre is at i f + (f - 1) / 2
            fit['center'] = tuple(c * factor + (factor - 1) / 2 for c in fit['center'])
            for key in ('sigma_y', 'sigma_x', 'sigma_major', 'sigma_minor'):
                fit[key] *= factor
    if fit is not None:
        fit['binning'] = factor
    return fit


def shape_metrics(erf_map: np.ndarray, weights: Optional[np.ndarray] = None) -> Dict:
    """Second-moment shape and Gaussian fit of a raw ERF map (NaN pixels count as absent).

    Args:
        erf_map: raw (H, W) map, non-negative.
        weights: optional (H, W) weights, e.g. the coverage fraction of each offset
            of an aligned map; pixels of weight 0 take no part.

    Returns:
        dict: ``center`` (y, x) of mass relative to the map centre (H // 2, W // 2),
        the :func:`covariance_shape` keys of the second moments, and ``gaussian``
        (see :func:`fit_gaussian`; its ``center`` also relative to the map centre;
        ``binning`` f > 1 when a map over 2**18 pixels was fitted on f x f block
        means), None values for a map with no mass.
    """
    data = np.asarray(erf_map, dtype=np.float64)
    missing = ~np.isfinite(data)
    if missing.any():
        weights = (np.ones_like(data) if weights is None else np.array(weights, float))
        weights[missing] = 0.0
        data = np.where(missing, 0.0, data)
    peak = data.max() if data.size else 0.0
    empty = dict(center=[None, None], sigma_y=None, sigma_x=None, sigma_major=None,
                 sigma_minor=None, orientation_deg=None, anisotropy=None, gaussian=None)
    if not peak > 0:
        return empty
    data = data / peak
    moments = second_moments(data, weights)
    if moments is None:
        return empty
    cy, cx = data.shape[0] // 2, data.shape[1] // 2
    out: Dict[str, object] = dict(center=[moments['mean'][0] - cy, moments['mean'][1] - cx])
    out.update(covariance_shape(moments['cov']))
    fit = _binned_fit(data, weights)
    if fit is not None:
        fit['amplitude'] *= peak
        fit['center'] = [fit['center'][0] - cy, fit['center'][1] - cx]
    out['gaussian'] = fit
    return out
