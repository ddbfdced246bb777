"""Marks drawn on comparison figures: significant differences, the TRF outline.

Kept apart from plots.py (drawing of the maps themselves): each function draws on an
axes it is given, so a figure calls it once per panel.
"""
import textwrap
from typing import Optional, Sequence

from ..engine.trf_plot import draw_trf_outline  # noqa: F401  (the one TRF outline)


def short_name(metric: str) -> str:
    """A metric's name as a panel has room for: ``area_ratio.0.5`` -> ``a@0.5``."""
    head, _, rest = metric.partition('.')
    names = {'area_ratio': 'a@', 'effective_radius': 'radius', 'erf_trf_ratio': 'ERF/TRF',
             'radial_mass': 'mass r', 'center_of_mass': 'com '}
    return names.get(head, head + ('.' if rest else '')) + rest


def mark_significant(ax, metrics: Sequence[str], against: Optional[str] = None) -> None:
    """A star and the metrics that differ significantly (95 % interval of the difference
    excludes 0, see :mod:`.differences`) in the panel's top right corner, in short names
    wrapped to the panel (the differences table has them whole)."""
    if not metrics:
        return
    names = textwrap.fill(', '.join(short_name(m) for m in metrics), width=24)
    text = f'* {names}' + (f'\nvs {against}' if against else '')
    ax.text(0.98, 0.98, text, transform=ax.transAxes, ha='right', va='top', fontsize=5.5,
            color='black', bbox=dict(boxstyle='round,pad=0.2', fc='white', alpha=0.8, lw=0))
