"""What a finished run says: the summary table, the hook's scalars and log line.

Each reads the result's metrics through one list of columns, :data:`COLUMNS`: a
metric added there appears in the CLI's table, the hook's scalars and its log line.
"""
from typing import Callable, Dict, List, NamedTuple, Optional

from ..engine import ERFResult
from ..engine.point_plots import FEW_POINTS, sorted_groups


class Column(NamedTuple):
    name: str                                  # table heading
    key: str                                   # scalar name: <mode>/erf/<target>/<key>
    value: Callable[[Dict], Optional[float]]   # from one group's metrics
    text: Callable[[float], str]               # how the table and log line show it
    unit: float = 1.0                          # scalar = value * unit (percent: 100)


def _percent(v: float) -> str:
    return f'{100 * v:.3g}%' if v >= 0.001 else f'{100 * v:.2g}%'


def _area(threshold: str) -> Column:
    # scalars in percent: a log line prints 4 decimals, and 7.7e-05 would read 0.0001
    return Column(f'area@{threshold}', f'area_{threshold}_pct',
                  lambda m: m['area_ratio'].get(threshold), _percent, 100.0)


def _shape(key: str, fmt: str) -> Column:
    return Column(key, key, lambda m: (m.get('shape') or {}).get(key),
                  lambda v: format(v, fmt))


COLUMNS: List[Column] = [
    _area('0.2'), _area('0.3'), _area('0.5'), _area('0.99'),
    Column('eff.radius', 'radius_px', lambda m: m.get('effective_radius'),
           lambda v: f'{v:.1f}px'),
    _shape('sigma_y', '.1f'), _shape('sigma_x', '.1f'), _shape('anisotropy', '.2f'),
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
        for column in COLUMNS:
            value = column.value(m)
            cells.append('-' if value is None else column.text(value))
        lines.append(cells)
    widths = [max(len(str(r[i])) for r in lines + [head]) for i in range(len(head))]
    line = lambda r: '  '.join(str(c).ljust(w) for c, w in zip(r, widths))  # noqa: E731
    out = [line(head), line(['-' * w for w in widths])] + [line(r) for r in lines]
    if not result.is_classic:
        out.append(f'* fewer than {FEW_POINTS} points: not to be trusted alone')
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
