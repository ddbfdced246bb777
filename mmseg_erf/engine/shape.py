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
# the model is floored at exp(-300) ~ 5e-131, far below any value a fit can resolve:
# numpy's vector exp leaves its fast path where results underflow, and products of
# smaller values (e^2, the residual times e) are subnormal, which slows the moment
# matrix products by about 50x
_EXP_FLOOR = -300.0
# above this many pixels the Gaussian is fitted to block means (the fit's cost grows
# with the pixels; a 2047 x 2047 canvas would take seconds per map)
_FIT_PIXELS = 1 << 18


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
    # row and column sums carry every moment but the cross term: no coordinate grids
    rows, cols = mass.sum(axis=1), mass.sum(axis=0)
    dy = np.arange(mass.shape[0], dtype=np.float64)
    dx = np.arange(mass.shape[1], dtype=np.float64)
    my, mx = dy @ rows / total, dx @ cols / total
    dy -= my
    dx -= mx
    cov_yx = np.einsum('i,ij,j->', dy, mass, dx) / total   # no BLAS threads (_grid_moments)
    cov = np.array([[dy * dy @ rows / total, cov_yx], [cov_yx, dx * dx @ cols / total]])
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


_P = np.arange(3)
# M[p + r, q + s] for the normal matrix: index arrays of shape (p, q, r, s)
_SUM_Y = _P[:, None, None, None] + _P[None, None, :, None]
_SUM_X = _P[None, :, None, None] + _P[None, None, None, :]


def _jacobian_polynomials(params: np.ndarray) -> np.ndarray:
    """(6, 3, 3): the derivative of ``A e`` by (A, my, mx, a, b, c), each divided by e,
    as coefficients of dy^p dx^q (e = exp(-q/2), q = a dy^2 + 2 b dy dx + c dx^2)."""
    amp, _, _, a, b, c = params
    coef = np.zeros((6, 3, 3))
    coef[0, 0, 0] = 1.0
    coef[1, 1, 0], coef[1, 0, 1] = amp * a, amp * b
    coef[2, 1, 0], coef[2, 0, 1] = amp * b, amp * c
    coef[3, 2, 0], coef[4, 1, 1], coef[5, 0, 2] = -0.5 * amp, -amp, -0.5 * amp
    return coef


def _powers(offsets: np.ndarray, count: int) -> np.ndarray:
    """(count, n): rows offsets**0 .. offsets**(count - 1), each contiguous."""
    powers = np.empty((count, offsets.size))
    powers[0] = 1.0
    for k in range(1, count):
        np.multiply(powers[k - 1], offsets, out=powers[k])
    return powers


def _grid_moments(values: np.ndarray, powers_y: np.ndarray, powers_x: np.ndarray):
    """``sum values dy^p dx^q`` for the rows p of ``powers_y`` and q of ``powers_x``.

    einsum, not ``@``: numpy's BLAS runs products of this size on threads of its own,
    which on busy cores (or next to torch's) made a fit several times slower.
    """
    return np.einsum('pi,iq->pq', powers_y, np.einsum('ij,qj->iq', values, powers_x))


class _GridFit:
    """The least-squares problem of :func:`fit_gaussian` on the pixel grid.

    Every Jacobian column is ``e`` times a quadratic polynomial in (dy, dx), so the
    normal matrix and the gradient are linear in the grid moments
    ``sum w e^2 dy^p dx^q`` (p, q <= 4) and ``sum w r e dy^p dx^q`` (p, q <= 2): two
    small matrix products with the row and column powers replace the (pixels x 6)
    Jacobian, and an evaluation costs one exp per pixel.
    """

    def __init__(self, target: np.ndarray, weights: Optional[np.ndarray]):
        self.target, self.weights = target, weights
        self.ys = np.arange(target.shape[0], dtype=np.float64)
        self.xs = np.arange(target.shape[1], dtype=np.float64)
        # per-pixel buffers for the accepted point and a trial (e, residual, weighted
        # residual) and one scratch: fresh arrays of this size cost more in page
        # faults than the arithmetic on them
        self._free = [[np.empty_like(target) for _ in range(3)] for _ in range(2)]
        self._scratch = np.empty_like(target)

    def evaluate(self, params: np.ndarray):
        """``(cost, state)``: ``sum w (A e - target)^2`` and what :meth:`step_system`
        needs at that point; :meth:`release` hands the state's buffers back."""
        amp, my, mx, a, b, c = params
        buffers = self._free.pop()
        e, residual, weighted = buffers
        dy, dx = self.ys - my, self.xs - mx
        np.multiply(dy[:, None], (-b) * dx, out=e)
        e += (-0.5 * a) * (dy * dy)[:, None]
        e += (-0.5 * c) * (dx * dx)
        np.maximum(e, _EXP_FLOOR, out=e)
        np.exp(e, out=e)
        np.multiply(e, -amp, out=residual)
        residual += self.target
        if self.weights is None:
            weighted = residual
        else:
            np.multiply(residual, self.weights, out=weighted)
        return float(np.einsum('ij,ij->', weighted, residual)), (dy, dx, e, weighted, buffers)

    def release(self, state) -> None:
        self._free.append(state[-1])

    def step_system(self, params: np.ndarray, state) -> Tuple[np.ndarray, np.ndarray]:
        """Normal matrix J^T W J and gradient J^T W r at an evaluated point."""
        dy, dx, e, weighted, _ = state
        scratch = self._scratch
        powers_y, powers_x = _powers(dy, 5), _powers(dx, 5)
        np.multiply(weighted, e, out=scratch)
        residual_moments = _grid_moments(scratch, powers_y[:3], powers_x[:3])
        np.multiply(e, e, out=scratch)
        if self.weights is not None:
            scratch *= self.weights
        moments = _grid_moments(scratch, powers_y, powers_x)          # (5, 5)
        coef = _jacobian_polynomials(params)
        normal = np.einsum('kpq,pqrs,lrs->kl', coef, moments[_SUM_Y, _SUM_X], coef)
        return normal, np.einsum('kpq,pq->k', coef, residual_moments)


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
    w = None
    if weights is not None:
        keep = np.asarray(weights) > 0
        # the whole grid takes part, pixels left out with weight 0 and value 0 (a
        # huge value there would give inf * 0 = NaN in the sums)
        w = np.where(keep, np.asarray(weights, dtype=np.float64), 0.0)
        scale = values[keep].max()
        values = np.where(keep, values, 0.0)
    else:
        scale = values.max()
    target = values / scale
    problem = _GridFit(target, w)
    cov = moments['cov'] + np.eye(2) * 1e-3  # a one-pixel map has zero variance
    prec = np.linalg.inv(cov)
    params = np.array([1.0, *moments['mean'], prec[0, 0], prec[0, 1], prec[1, 1]])

    (current, state), damping = problem.evaluate(params), 1e-3
    for _ in range(_MAX_ITERATIONS):
        normal, gradient = problem.step_system(params, state)
        improved = False
        while damping < 1e12:
            step = np.linalg.solve(normal + damping * np.diag(np.diag(normal) + 1e-12),
                                   gradient)
            trial = params + step
            positive = trial[3] > 0 and trial[5] > 0 and trial[3] * trial[5] > trial[4] ** 2
            if positive:
                new, trial_state = problem.evaluate(trial)
                if new <= current:
                    improved = current - new > 1e-14 * max(current, 1e-300)
                    problem.release(state)
                    params, current, state = trial, new, trial_state
                    damping = max(damping / 10, 1e-12)
                    break
                problem.release(trial_state)
            damping *= 10
        if not improved:
            break
    fitted = np.linalg.inv(np.array([[params[3], params[4]], [params[4], params[5]]]))
    if w is None:
        total = float(((target - target.mean()) ** 2).sum())
    else:
        mean_t = (w * target).sum() / w.sum()
        total = float((w * (target - mean_t) ** 2).sum())
    out = dict(amplitude=float(params[0] * scale), center=(float(params[1]), float(params[2])))
    out.update(covariance_shape(fitted))
    out['r2'] = 1 - current / total if total > 0 else (1.0 if current == 0 else 0.0)
    return out


def _block_means(data: np.ndarray, weights: Optional[np.ndarray], factor: int):
    """Weighted block means of ``factor x factor`` blocks (edges padded with weight 0),
    and the block weights (mean weight; None where every block weight is 1)."""
    h, w = data.shape
    ph, pw = -h % factor, -w % factor
    shape = ((h + ph) // factor, factor, (w + pw) // factor, factor)
    if weights is None and ph == pw == 0:
        # unit weights and no padding: the same means without weight arrays
        return data.reshape(shape).sum(axis=(1, 3)) / float(factor**2), None
    wts = np.ones_like(data) if weights is None else np.asarray(weights, dtype=np.float64)
    wts = np.pad(wts, ((0, ph), (0, pw)))
    vals = np.pad(data, ((0, ph), (0, pw))) * wts
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
