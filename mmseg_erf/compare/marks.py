"""Marks drawn on comparison figures: significant differences, the TRF outline.

Kept apart from plots.py (drawing of the maps themselves): each function draws on an
axes it is given, so a figure calls it once per panel.
"""
from typing import Optional, Sequence

from ..engine.trf_plot import draw_trf_outline  # noqa: F401  (the one TRF outline)


def mark_significant(ax, metrics: Sequence[str], against: Optional[str] = None) -> None:
    """A star and the metrics that differ significantly (95 % interval of the difference
    excludes 0, see :mod:`.differences`) in the panel's top right corner."""
    if not metrics:
        return
    text = '* ' + ', '.join(metrics) + (f'\nvs {against}' if against else '')
    ax.text(0.98, 0.98, text, transform=ax.transAxes, ha='right', va='top', fontsize=6,
            color='black', bbox=dict(boxstyle='round,pad=0.2', fc='white', alpha=0.8, lw=0))
