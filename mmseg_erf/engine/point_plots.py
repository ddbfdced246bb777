"""Figures of a point run: group grid, per-group chart, K x K position panel.

Coverage rule (every aligned map drawn here and by ``erf_compare`` on point runs):
an offset seen by fewer than ``MIN_COVERAGE`` (50 %) of a group's maps is masked
(hatched grey), and each panel is normalised over the offsets it shows. Offsets
near a canvas edge are seen only by the few points near an image border; left in,
their means (over 1 or 2 maps) drew as bright as the well-covered centre.
"""
import math
import os
from typing import List, Optional, Sequence, Tuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .plotting import CMAP, check_cmap, normalize, percent, pixels, scale_label
from .files import replacing, target_filename

# groups with fewer points than this are marked in tables and figures
FEW_POINTS = 10
MIN_COVERAGE = 0.5
COVERAGE_RULE = f"hatched: offsets seen by < {MIN_COVERAGE * 100:.0f} % of the group's maps"


def shown_mask(canvas: np.ndarray, coverage: np.ndarray, count: int) -> np.ndarray:
    """The offsets a panel draws: finite, and seen by at least MIN_COVERAGE of the maps."""
    if count <= 0:
        return np.zeros(canvas.shape, dtype=bool)
    return np.isfinite(canvas) & (coverage >= MIN_COVERAGE * count)


def crop_box(masks: Sequence[np.ndarray]) -> Tuple[slice, slice]:
    """The smallest box holding every shown offset of every panel: one box per figure,
    so a pixel is the same size in every panel."""
    union = np.logical_or.reduce(list(masks)) if len(masks) else None
    if union is None or not union.any():
        return slice(None), slice(None)
    rows, cols = np.flatnonzero(union.any(1)), np.flatnonzero(union.any(0))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def _hatch(ax) -> None:
    # behind the image: masked offsets are transparent and show it
    ax.add_patch(Rectangle((0, 0), 1, 1, transform=ax.transAxes, facecolor='0.88',
                           edgecolor='0.6', hatch='////', linewidth=0, zorder=-1))


def box_aspect(shape: Tuple[int, int], box: Tuple[slice, slice]) -> float:
    """Height over width of the crop box on a canvas of ``shape``."""
    rows, cols = range(shape[0])[box[0]], range(shape[1])[box[1]]
    return len(rows) / max(len(cols), 1)


def empty_panel(ax, text: str, aspect: float = 1.0) -> None:
    """A panel with nothing to draw says why instead of showing a flat map; it keeps
    the drawn panels' shape (``aspect``: height over width)."""
    ax.set_box_aspect(aspect)
    _hatch(ax)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha='center', va='center', fontsize=8,
            bbox=dict(facecolor='white', edgecolor='0.5'))


def show_group(ax, canvas: np.ndarray, coverage: np.ndarray, count: int,
               box: Tuple[slice, slice], title: str, normalization: str = 'replknet',
               cmap: str = CMAP):
    """One group's aligned mean map under the coverage rule; returns the image, or
    None for a group with no points or no response (labelled as such)."""
    ax.set_title(title, fontsize=7)
    aspect = box_aspect(canvas.shape, box)
    if count <= 0:
        empty_panel(ax, 'no points', aspect)
        return None
    shown = shown_mask(canvas, coverage, count)[box]
    values = np.where(shown, canvas[box], 0.0)
    if not (values > 0).any():
        empty_panel(ax, f'zero response\n(all {count} maps)' if shown.any()
                    else f'no offset seen by\n{MIN_COVERAGE * 100:.0f} % of the maps', aspect)
        return None
    data = normalize(values, normalization)
    image = ax.imshow(np.ma.masked_array(data, ~shown), cmap=check_cmap(cmap), vmin=0.0,
                      vmax=1.0, interpolation='nearest')
    _hatch(ax)
    ax.set_xticks([])
    ax.set_yticks([])
    return image


def colour_bar(fig: Figure, image, axes, normalization: str = 'replknet') -> None:
    """One colour bar for the panels (none when no panel drew a map)."""
    if image is None:
        return
    bar = fig.colorbar(image, ax=axes, shrink=0.8, aspect=30)
    bar.set_label(scale_label(normalization, 'panel max'), fontsize=7)
    bar.ax.tick_params(labelsize=7)


def _save(fig: Figure, path: str) -> None:
    FigureCanvasAgg(fig)
    with replacing(path) as tmp:
        fig.savefig(tmp, dpi=100)


def radius_key(result, target: str, group: str) -> float:
    radius = result.metrics[target][group]['effective_radius']
    return float('inf') if radius is None else radius


def sorted_groups(result, target: str, groups: Sequence[str] = None) -> List[str]:
    """Groups by effective radius, smallest first (no mass last)."""
    return sorted(groups if groups is not None else result.groups,
                  key=lambda g: (radius_key(result, target, g), g))


def group_caption(metrics: Optional[dict], with_radius: bool = True) -> str:
    """``N=8 (few), r=66.3 px``: the points behind a panel and its effective radius."""
    count = metrics['count'] if metrics else 0
    few = ' (few)' if count < FEW_POINTS else ''
    if not with_radius:
        return f'N={count}{few}'
    return f'N={count}{few}, r={pixels(metrics["effective_radius"] if metrics else None)}'


def _label(result, target: str, group: str) -> str:
    return f'{group}\n{group_caption(result.metrics[target][group])}'


def _draw(result, target: str, fig: Figure, places) -> Figure:
    """Panels at ``places`` (subplot index, group), one crop box, one colour bar."""
    box = crop_box([shown_mask(result.maps[target][g], result.coverage[g], result.counts[g])
                    for _, g in places])
    axes, image = [], None
    for index, group in places:
        ax = fig.add_subplot(*index)
        axes.append(ax)
        image = show_group(ax, result.maps[target][group], result.coverage[group],
                           result.counts[group], box, _label(result, target, group)) or image
    colour_bar(fig, image, axes)
    return fig


def group_grid_figure(result, target: str) -> Figure:
    """Every group's aligned map, by effective radius, under the coverage rule."""
    groups = sorted_groups(result, target)
    cols = min(6, len(groups))
    rows = math.ceil(len(groups) / cols)
    fig = Figure(figsize=(2.0 * cols + 0.8, 2.2 * rows + 0.6), layout='constrained')
    fig.suptitle(f'{result.model_name}\n{target}: aligned ERF per group, by effective '
                 f'radius\n{COVERAGE_RULE}', fontsize=8)
    return _draw(result, target, fig, [((rows, cols, i + 1), g) for i, g in enumerate(groups)])


def group_chart_figure(result, target: str) -> Figure:
    """Bars of each group's 50 % area ratio (percent) and effective radius (px)."""
    groups = sorted_groups(result, target)
    metrics = [result.metrics[target][g] for g in groups]
    areas = [100.0 * (m['area_ratio']['0.5'] or 0.0) for m in metrics]
    radii = [m['effective_radius'] or 0.0 for m in metrics]
    fig = Figure(figsize=(9, 0.3 * len(groups) + 1.4), layout='constrained')
    y = np.arange(len(groups))
    for col, (values, name) in enumerate(((areas, 'area@0.5 (% of the input)'),
                                          (radii, 'effective radius (px)'))):
        ax = fig.add_subplot(1, 2, col + 1)
        bars = ax.barh(y, values, color='tab:green' if col else 'tab:blue')
        texts = ([percent(m['area_ratio']['0.5']) for m in metrics] if col == 0
                 else [pixels(m['effective_radius']) for m in metrics])
        ax.bar_label(bars, texts, fontsize=6, padding=2)
        ax.set_yticks(y)
        ax.set_yticklabels([f'{g} (N={m["count"]})' for g, m in zip(groups, metrics)]
                           if col == 0 else [], fontsize=7)
        ax.invert_yaxis()
        ax.margins(x=0.2)  # room for the bar labels
        ax.set_xlabel(name, fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(f'{result.model_name}\n{target}: N = points behind each group', fontsize=8)
    return fig


def position_grid_figure(result, target: str) -> Figure:
    """The K x K grid run's groups at their places."""
    k = result.points.grid
    places = [((k, k, i * k + j + 1), f'grid_{i}_{j}') for i in range(k) for j in range(k)
              if f'grid_{i}_{j}' in result.maps[target]]
    fig = Figure(figsize=(2.0 * k + 0.8, 2.2 * k + 0.6), layout='constrained')
    fig.suptitle(f'{result.model_name}\n{target}: ERF at {k} x {k} positions\n'
                 f'{COVERAGE_RULE}', fontsize=8)
    return _draw(result, target, fig, places)


def write_point_figures(result, out_dir: str) -> None:
    for target in result.targets:
        stem = target_filename(target, '')[len('erf_'):]
        if result.points.kind == 'grid':
            _save(position_grid_figure(result, target),
                  os.path.join(out_dir, f'position_grid_{stem}.png'))
        _save(group_grid_figure(result, target), os.path.join(out_dir, f'groups_{stem}.png'))
        _save(group_chart_figure(result, target),
              os.path.join(out_dir, f'groups_chart_{stem}.png'))
