"""Marks drawn on comparison figures: significant differences, the TRF outline.

Kept apart from plots.py (drawing of the maps themselves): each function draws on an
axes it is given, so a figure calls it once per panel.
"""
from typing import Optional, Sequence

from matplotlib.patches import Rectangle


def mark_significant(ax, metrics: Sequence[str], against: Optional[str] = None) -> None:
    """A star and the metrics that differ significantly (95 % interval of the difference
    excludes 0, see :mod:`.differences`) in the panel's top right corner."""
    if not metrics:
        return
    text = '* ' + ', '.join(metrics) + (f'\nvs {against}' if against else '')
    ax.text(0.98, 0.98, text, transform=ax.transAxes, ha='right', va='top', fontsize=6,
            color='black', bbox=dict(boxstyle='round,pad=0.2', fc='white', alpha=0.8, lw=0))


def draw_trf_outline(ax, trf: Optional[dict], canvas_shape: Sequence[int],
                     origin: Optional[Sequence[int]] = None) -> None:
    """The TRF square (side ``trf['side']``, :mod:`mmseg_erf.engine.trf`) centred on the
    response point (default the canvas centre), dashed where it is a lower bound."""
    if not trf or not trf.get('side'):
        return
    h, w = canvas_shape[:2]
    oy, ox = origin if origin is not None else (h // 2, w // 2)
    half = trf['side'] / 2
    ax.add_patch(Rectangle((ox - half, oy - half), trf['side'], trf['side'], fill=False,
                           lw=0.8, ec='white', ls='--' if trf.get('clipped') else '-'))
