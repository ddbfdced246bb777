"""What a finished run says: the summary table, the hook's scalars and log line.

Each reads the result's metrics through one list of columns, :data:`COLUMNS`: a
metric added there appears in the CLI's table, the hook's scalars and its log line.
"""
from typing import Callable, Dict, List, NamedTuple, Optional

from ..engine import ERFResult
from ..engine.point_plots import FEW_POINTS, sorted_groups
from ..engine.stats import lookup


class Column(NamedTuple):
    name: str                                  # table heading
    key: str                                   # scalar name: <mode>/erf/<target>/<key>
    value: Callable[[Dict], Optional[float]]   # from one group's metrics
    text: Callable[[float], str]               # how the table and log line show it
    unit: float = 1.0                          # scalar = value * unit (percent: 100)
    metric: Optional[str] = None               # dotted name of its ``ci95`` entry


def interval_of(column: Column, metrics: Dict) -> Optional[List[float]]:
    """The column's [low, high] in these metrics, None without one."""
    if column.metric is None:
        return None
    found = lookup(metrics.get('ci95') or {}, column.metric)
    return found if isinstance(found, list) and None not in found else None


def cell(column: Column, metrics: Dict) -> str:
    """The value, and its 95 % interval in brackets when the run has one."""
    value = column.value(metrics)
    if value is None:
        return '-'
    bounds = interval_of(column, metrics)
    if bounds is None:
        return column.text(value)
    return f'{column.text(value)} [{column.text(bounds[0])}, {column.text(bounds[1])}]'


def _percent(v: float) -> str:
    return f'{100 * v:.3g}%' if v >= 0.001 else f'{100 * v:.2g}%'


def _area(threshold: str) -> Column:
    # scalars in percent: a log line prints 4 decimals, and 7.7e-05 would read 0.0001
    return Column(f'area@{threshold}', f'area_{threshold}_pct',
                  lambda m: m['area_ratio'].get(threshold), _percent, 100.0,
                  f'area_ratio.{threshold}')


def _shape(key: str, fmt: str) -> Column:
    return Column(key, key, lambda m: (m.get('shape') or {}).get(key),
                  lambda v: format(v, fmt))


COLUMNS: List[Column] = [
    _area('0.2'), _area('0.3'), _area('0.5'), _area('0.99'),
    Column('eff.radius', 'radius_px', lambda m: m.get('effective_radius'),
           lambda v: f'{v:.1f}px', metric='effective_radius'),
    _shape('sigma_y', '.1f'), _shape('sigma_x', '.1f'), _shape('anisotropy', '.2f'),
    # the theoretical field read from the gradient's support (engine/trf.py); the
    # table shows '>=' where it reaches the canvas edge (then a lower bound)
    Column('TRF side', 'trf_side_px', lambda m: (m.get('trf') or {}).get('side'),
           lambda v: f'{v:d}px'),
    Column('ERF/TRF', 'erf_trf_ratio', lambda m: m.get('erf_trf_ratio'),
           lambda v: f'{v:.3f}', metric='erf_trf_ratio'),
]


def rows(result: ERFResult):
    """(target, group, metrics) in display order: groups by effective radius."""
    for target in result.targets:
        groups = result.groups if result.is_classic else sorted_groups(result, target)
        for group in groups:
            yield target, group, result.metrics[target][group]


def summary_table(result: ERFResult) -> str:
    """One row per target (and group): the count beside every number."""
    head = ['target'] + ([] if result.is_classic else ['group', 'N']) + \
        [c.name for c in COLUMNS]
    lines = []
    for target, group, m in rows(result):
        cells = [target]
        if not result.is_classic:
            cells += [group, f'{m["count"]}{"*" if m["count"] < FEW_POINTS else ""}']
        cells += [cell(column, m) for column in COLUMNS]
        if (m.get('trf') or {}).get('clipped'):
            cells[-2] = f'>={cells[-2]}'
        lines.append(cells)
    widths = [max(len(str(r[i])) for r in lines + [head]) for i in range(len(head))]
    line = lambda r: '  '.join(str(c).ljust(w) for c, w in zip(r, widths))  # noqa: E731
    out = [line(head), line(['-' * w for w in widths])] + [line(r) for r in lines]
    if not result.is_classic:
        out.append(f'* fewer than {FEW_POINTS} points: not to be trusted alone')
    if result.meta.get('intervals'):
        info = result.meta['intervals']
        out.append(f'[low, high]: 95 % interval, bootstrap over {info["buckets"]} image '
                   f'buckets ({info["replicates"]} replicates)')
    return '\n'.join(out)


def scalars(result: ERFResult, mode: str) -> Dict[str, float]:
    """``<mode>/erf/<target>[/<group>]/<key>`` for every number the table shows: area
    ratios in percent (``area_0.5_pct``), the radius in pixels (``radius_px``)."""
    out = {}
    for target, group, m in rows(result):
        key = f'{mode}/erf/{target}' + ('' if result.is_classic else f'/{group}')
        for column in COLUMNS:
            value = column.value(m)
            if value is not None:
                out[f'{key}/{column.key}'] = float(value) * column.unit
            bounds = interval_of(column, m)
            if bounds is not None:  # the 95 % interval, in the scalar's unit
                out[f'{key}/{column.key}_ci_low'] = float(bounds[0]) * column.unit
                out[f'{key}/{column.key}_ci_high'] = float(bounds[1]) * column.unit
    return out


def log_line(result: ERFResult, out_dir: str) -> str:
    """The hook's one line: images, size, where, and area@0.5 / radius per target."""
    h, w = result.input_size
    head = (f'ERF of {result.num_images} images ({result.skipped} skipped) at {h}x{w}'
            f'{"" if result.is_classic else f", {len(result.groups)} {result.points.kind} groups"}'
            f' -> {out_dir}')
    if not result.is_classic:
        return head
    parts = []
    for target, _, m in rows(result):
        shown = [f'{c.name}={c.text(c.value(m))}' for c in COLUMNS[2:5]
                 if c.value(m) is not None]
        parts.append(f'{target}: {" ".join(shown)}')
    return f'{head}; {"; ".join(parts)}'
