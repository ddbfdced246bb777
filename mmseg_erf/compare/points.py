"""Point runs side by side (``tools/erf_compare.py`` on ``--points`` run directories).

One row per group (class, boundary/interior region or grid cell), one column per
run: each run's aligned mean map of that group, and a table with the count beside
every number, so a class seen at 3 points is not read like one seen at 300. The
maps follow the coverage rule of :mod:`mmseg_erf.engine.point_plots`; a group a
run has no points of is a panel that says so.
"""
import math
import os
from typing import Dict, List, Optional, Sequence, Tuple

from matplotlib.figure import Figure

from ..engine import ERFResult
from ..engine.plotting import percent
from ..engine.point_plots import (COVERAGE_RULE, FEW_POINTS, box_aspect, colour_bar,
                                  crop_box, empty_panel, group_caption, show_group, shown_mask,
                                  sorted_groups)
from ..errors import ERFUsageError
from .modes import check_out, save_figure
from .plots import Style
from .runs import read_run
from .tables import write_tables

COLUMNS = ['group', 'run', 'target', 'count', 'area_0.5', 'effective_radius', 'sigma_y',
           'sigma_x', 'anisotropy', 'gauss_r2', 'run_dir']


def _read(path: str) -> ERFResult:
    result = read_run(path)
    if result.is_classic:
        raise ERFUsageError(f'{path} is not a point run (run with --points); compare runs '
                            f'made with --points')
    return result


def compare_points(run_dirs: Sequence[str], out: str, labels: Optional[Sequence[str]] = None,
                   target: Optional[str] = None, dpi: int = 100,
                   normalization: str = 'replknet',
                   style: Style = Style()) -> Tuple[List[Dict], List[str]]:
    """Draw and tabulate the groups of point runs; returns (rows, written paths).

    The columns are the runs, titled by ``labels``; ``style.titles`` (one per target
    in the other modes) is refused here.
    """
    if style.titles is not None:
        raise ERFUsageError('point runs are titled by --labels (one per run column); '
                            'drop --titles')
    check_out(out)
    results = [_read(p) for p in run_dirs]
    labels = list(labels or [os.path.basename(os.path.normpath(p)) for p in run_dirs])
    if len(labels) != len(results):
        raise ERFUsageError(f'{len(labels)} labels for {len(results)} runs; pass one per run')
    common = [t for t in results[0].targets if all(t in r.maps for r in results)]
    if target is None:
        if not common:
            raise ERFUsageError('the runs share no target; compare runs of one target')
        target = common[0]
    elif target not in common:
        raise ERFUsageError(f'target {target!r} is not in every run; choose one of {common}')
    groups = sorted_groups(results[0], target)
    groups += sorted({g for r in results[1:] for g in r.groups} - set(groups))
    rows = []
    for group in groups:
        for label, result, path in zip(labels, results, run_dirs):
            m = result.metrics[target].get(group)
            shape = (m or {}).get('shape') or {}
            rows.append(dict(
                group=group, run=label, target=target, count=m['count'] if m else 0,
                **{'area_0.5': m['area_ratio']['0.5'] if m else None},
                effective_radius=m['effective_radius'] if m else None,
                sigma_y=shape.get('sigma_y'), sigma_x=shape.get('sigma_x'),
                anisotropy=shape.get('anisotropy'),
                gauss_r2=(shape.get('gaussian') or {}).get('r2'), run_dir=path))
    save_figure(points_figure(results, labels, target, groups, normalization, style), out,
                dpi)
    md_path, csv_path = _write_tables(rows, out)
    return rows, [out, md_path, csv_path]


def points_figure(results, labels, target, groups, normalization='replknet',
                  style: Style = Style()) -> Figure:
    """Rows of groups, columns of runs, one crop box and one colour bar."""
    cols = len(results)
    fig = Figure(figsize=(2.2 * cols + 1.4, 2.2 * len(groups) + 0.9), layout='constrained')
    # one crop box for every panel, so a pixel is the same size throughout
    box = crop_box([shown_mask(r.maps[target][g], r.coverage[g], r.counts[g])
                    for r in results for g in groups if g in r.maps[target]])
    axes, image = [], None
    for i, group in enumerate(groups):
        for j, (label, result) in enumerate(zip(labels, results)):
            ax = fig.add_subplot(len(groups), cols, i * cols + j + 1)
            axes.append(ax)
            top = f'{label}\n' if i == 0 else ''
            if group not in result.maps[target]:
                ax.set_title(f'{top}N=0', fontsize=7)
                empty_panel(ax, 'no points', box_aspect(results[0].canvas_shape(), box))
            else:
                m = result.metrics[target][group]
                image = show_group(ax, result.maps[target][group], result.coverage[group],
                                   result.counts[group], box,
                                   top + group_caption(m, with_radius=style.metrics),
                                   normalization, style.cmap) or image
            if j == 0:
                ax.set_ylabel(group, fontsize=8)
    colour_bar(fig, image, axes, normalization)
    if style.title:
        fig.suptitle(f'{target}: aligned ERF per group (rows by the first run\'s effective '
                     f'radius)\n{COVERAGE_RULE}', fontsize=8)
    return fig


def _fmt(value, digits: int) -> str:
    if value is None:
        return '-'
    return f'{value:.{digits}f}' if math.isfinite(value) else str(value)


def _percent(ratio) -> str:
    return '-' if ratio is None else percent(ratio)[:-2]  # the unit is in the header


def point_markdown(rows: Sequence[Dict]) -> str:
    head = ['group', 'run', 'N', 'area@0.5 (%)', 'eff. radius (px)', 'sigma_y', 'sigma_x',
            'anisotropy', 'Gauss R2']
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for r in rows:
        few = '*' if r['count'] < FEW_POINTS else ''
        cells = [r['group'], r['run'], f'{r["count"]}{few}', _percent(r['area_0.5']),
                 _fmt(r['effective_radius'], 1), _fmt(r['sigma_y'], 1), _fmt(r['sigma_x'], 1),
                 _fmt(r['anisotropy'], 2), _fmt(r['gauss_r2'], 3)]
        lines.append('| ' + ' | '.join(str(c).replace('|', '\\|') for c in cells) + ' |')
    lines.append(f'\n\\* fewer than {FEW_POINTS} points behind the group.')
    return '\n'.join(lines) + '\n'


def _write_tables(rows: Sequence[Dict], out: str) -> Tuple[str, str]:
    return write_tables(rows, out, point_markdown(rows), COLUMNS)
