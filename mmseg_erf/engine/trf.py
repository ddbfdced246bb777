"""The theoretical receptive field (TRF) of a target, from where its gradient is not zero.

A pixel outside the TRF cannot change the response, so its raw input gradient is
exactly zero on every input; inside, it is zero only by accident (a ReLU off on that
image, a zero weight). The support of a run is the union over its maps of the pixels
where any channel's raw gradient was non-zero (before the ReLU of the map), which
approaches the TRF from inside and equals it on a stack of convolutions. Read from
the gradient, it needs no knowledge of the layers (dilations, attention, pooling).

``side`` is that of the smallest square centred on the response point holding the
support: n(k - 1) + 1 for n stride-1 k x k convolutions. ``clipped``: the support
reaches the canvas edge, so the TRF is at least what the canvas shows (a global
layer, or a field larger than the image). The ERF/TRF ratio is the effective radius
(RMS distance of the normalised ERF from the centre) over half the TRF side: Luo et
al. (2016) find the first growing as sqrt(n) and the second as n, so it falls as
1 / sqrt(n).
"""
from typing import Dict, Optional, Sequence

import numpy as np


def trf_metrics(support: np.ndarray, origin: Sequence[int]) -> Dict[str, object]:
    """``{'side', 'height', 'width', 'clipped'}`` of a support canvas whose response
    point is canvas cell ``origin`` (None values when no gradient was ever non-zero)."""
    support = np.asarray(support, dtype=bool)
    rows, cols = np.flatnonzero(support.any(axis=1)), np.flatnonzero(support.any(axis=0))
    if rows.size == 0:
        return dict(side=None, height=None, width=None, clipped=None)
    oy, ox = int(origin[0]), int(origin[1])
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
    reach = max(oy - y0, y1 - oy, ox - x0, x1 - ox, 0)
    h, w = support.shape
    return dict(side=2 * reach + 1, height=y1 - y0 + 1, width=x1 - x0 + 1,
                clipped=bool(y0 == 0 or x0 == 0 or y1 == h - 1 or x1 == w - 1))


def erf_trf_ratio(effective_radius: Optional[float], side: Optional[int]) -> Optional[float]:
    """Effective radius over half the TRF side (None when either is undefined)."""
    if effective_radius is None or not side:
        return None
    return float(effective_radius) / (side / 2)
