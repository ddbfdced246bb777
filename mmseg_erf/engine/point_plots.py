"""Figures of a point run: group grid, per-group chart, K x K position panel."""
import math
import os
from typing import List, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .metrics import replknet_normalize
from .plotting import CMAP
from .files import replacing, target_filename

# groups with fewer points than this are marked in tables and figures
FEW_POINTS = 10


def _show(ax, canvas: np.ndarray, title: str) -> None:
    """The canvas cropped to the offsets some map saw (grey inside: unseen)."""
    seen = np.isfinite(canvas)
    if seen.any():
        rows, cols = np.flatnonzero(seen.any(1)), np.flatnonzero(seen.any(0))
        canvas = canvas[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        seen = seen[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    data = replknet_normalize(np.where(seen, canvas, 0.0))
    ax.imshow(np.ma.masked_array(data, ~seen), cmap=CMAP, vmin=0.0, vmax=1.0,
              interpolation='nearest')
    ax.set_facecolor('0.75')  # offsets no map covered
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=7)


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


def _label(result, target: str, group: str) -> str:
    m = result.metrics[target][group]
    radius = m['effective_radius']
    few = ' (few)' if m['count'] < FEW_POINTS else ''
    r = f'{radius:.1f}' if radius is not None else '-'
    return f'{group}\nN={m["count"]}{few}, r={r}'


def group_grid(result, target: str, path: str) -> None:
    groups = sorted_groups(result, target)
    cols = min(6, len(groups))
    rows = math.ceil(len(groups) / cols)
    fig = Figure(figsize=(2.0 * cols, 2.2 * rows + 0.4))
    for i, group in enumerate(groups):
        _show(fig.add_subplot(rows, cols, i + 1), result.maps[target][group],
              _label(result, target, group))
    fig.suptitle(f'{result.model_name}\n{target}: aligned ERF per group, by effective '
                 f'radius (px); grey: offsets no map saw', fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def group_chart(result, target: str, path: str) -> None:
    groups = sorted_groups(result, target)
    metrics = [result.metrics[target][g] for g in groups]
    areas = [m['area_ratio']['0.5'] or 0.0 for m in metrics]
    radii = [m['effective_radius'] or 0.0 for m in metrics]
    fig = Figure(figsize=(9, 0.3 * len(groups) + 1.2))
    y = np.arange(len(groups))
    for col, (values, name) in enumerate(((areas, 'area@0.5 (fraction of input)'),
                                          (radii, 'effective radius (px)'))):
        ax = fig.add_subplot(1, 2, col + 1)
        ax.barh(y, values, color='tab:green' if col else 'tab:blue')
        ax.set_yticks(y)
        ax.set_yticklabels([f'{g} (N={m["count"]})' for g, m in zip(groups, metrics)]
                           if col == 0 else [], fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel(name, fontsize=8)
    fig.suptitle(f'{result.model_name}\n{target}: N = points behind each group', fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def position_grid(result, target: str, path: str) -> None:
    k = result.points.grid
    fig = Figure(figsize=(2.0 * k, 2.2 * k))
    for i in range(k):
        for j in range(k):
            group = f'grid_{i}_{j}'
            if group not in result.maps[target]:
                continue
            _show(fig.add_subplot(k, k, i * k + j + 1), result.maps[target][group],
                  _label(result, target, group))
    fig.suptitle(f'{result.model_name}\n{target}: ERF at {k} x {k} positions (each panel: '
                 f'the offsets its maps covered)', fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def write_point_figures(result, out_dir: str) -> None:
    for target in result.targets:
        stem = target_filename(target, '')[len('erf_'):]
        if result.points.kind == 'grid':
            position_grid(result, target, os.path.join(out_dir, f'position_grid_{stem}.png'))
        group_grid(result, target, os.path.join(out_dir, f'groups_{stem}.png'))
        group_chart(result, target, os.path.join(out_dir, f'groups_chart_{stem}.png'))
