"""The TRF outline on a heatmap (an engine figure may draw it; so may erf_compare's)."""
from typing import Optional, Sequence

from matplotlib.patches import Rectangle


def draw_trf_outline(ax, trf: Optional[dict], canvas_shape: Sequence[int],
                     origin: Optional[Sequence[int]] = None) -> None:
    """The TRF square (side ``trf['side']``, :mod:`.trf`) centred on the response point
    (default the canvas centre), dashed where it is a lower bound (``clipped``)."""
    if not trf or not trf.get('side'):
        return
    h, w = canvas_shape[:2]
    oy, ox = origin if origin is not None else (h // 2, w // 2)
    half = trf['side'] / 2
    # imshow puts pixel centres on integers: the square's edges lie half a pixel out
    ax.add_patch(Rectangle((ox - half, oy - half), trf['side'], trf['side'], fill=False,
                           lw=0.8, ec='white', ls='--' if trf.get('clipped') else '-'))
