"""The tables of :mod:`mmseg_erf.compare`: one row per run x target, Markdown and CSV.

The numbers are those of ``metrics.json`` (recomputed only for resampled runs);
the CSV keeps full precision, the Markdown rounds for reading.
"""
import csv
import os
from typing import Dict, List, Optional, Sequence, Tuple

from ..engine.plotting import percent

THRESHOLDS = ('0.2', '0.3', '0.5', '0.99')
COLUMNS = ['run', 'target', 'input_size', 'num_images'] + \
    [f'area_{t}' for t in THRESHOLDS] + ['effective_radius', 'com_dy', 'com_dx', 'run_dir']


def size_text(size: Sequence[int]) -> str:
    return 'x'.join(str(int(s)) for s in size)


def table_rows(runs: Sequence, targets: Sequence[str]) -> List[Dict[str, object]]:
    """One row per run x target with the numbers of ``metrics.json`` (None where undefined).

    Args:
        runs: :class:`mmseg_erf.compare.Run` objects.
        targets: targets every run has.
    """
    rows = []
    for run in runs:
        for target in targets:
            m = run.result.metrics_of(target)
            com = m.get('center_of_mass') or [None, None]
            size = size_text(run.result.input_size)
            if run.resampled_from:
                size += f' (from {size_text(run.resampled_from)})'
            row = dict(run=run.label, target=target, input_size=size,
                       num_images=run.result.num_images)
            row.update({f'area_{t}': m['area_ratio'].get(t) for t in THRESHOLDS})
            row.update(effective_radius=m.get('effective_radius'), com_dy=com[0],
                       com_dx=com[1], run_dir=run.path)
            rows.append(row)
    return rows


def _fmt(value, digits: int) -> str:
    return '-' if value is None else f'{value:.{digits}f}'


def markdown_table(rows: Sequence[Dict[str, object]]) -> str:
    head = ['run', 'target', 'input', 'N'] + [f'area@{t}' for t in THRESHOLDS] + \
        ['eff. radius (px)', 'centre of mass (dy, dx) px']
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for r in rows:
        com = '-' if r['com_dy'] is None else f'({r["com_dy"]:+.2f}, {r["com_dx"]:+.2f})'
        cells = [str(r['run']), str(r['target']), str(r['input_size']), str(r['num_images'])]
        cells += [percent(r[f'area_{t}']) for t in THRESHOLDS]  # 0.0001 said too little
        cells += [_fmt(r['effective_radius'], 2), com]
        # a '|' in a label would split the cell
        lines.append('| ' + ' | '.join(c.replace('|', '\\|') for c in cells) + ' |')
    return '\n'.join(lines) + '\n'


def table_paths(out: str) -> Tuple[str, str]:
    stem = os.path.splitext(out)[0]
    return stem + '.md', stem + '.csv'


def write_tables(rows: Sequence[Dict[str, object]], out: str,
                 markdown: Optional[str] = None,
                 columns: Sequence[str] = COLUMNS) -> Tuple[str, str]:
    """Write ``FIG.md`` and ``FIG.csv`` next to the figure ``out``; CSV keeps full precision.

    ``markdown`` (default: :func:`markdown_table` of ``rows``) and ``columns`` let
    other tables (point runs' per-group rows) share the files' form."""
    md_path, csv_path = table_paths(out)
    with open(md_path, 'w') as f:
        f.write(markdown_table(rows) if markdown is None else markdown)
    with open(csv_path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        for r in rows:
            writer.writerow({k: '' if r[k] is None else
                             (repr(r[k]) if isinstance(r[k], float) else r[k]) for k in columns})
    return md_path, csv_path
