"""Differences between runs that say whether they are real.

For each pair of runs, target and metric: the difference (second minus first) and
its 95 % interval from the runs' bootstrap replicates (``bootstrap.npz``). Two runs
on the same images (equal ``meta.images``: count and hash of the paths in order,
hence the same buckets) with the same bucket count, replicates and seed drew the same
buckets in replicate r, so the difference is taken replicate by replicate (PAIRED):
what both models share about the images cancels, and a checkpoint-to-checkpoint
difference far smaller than either interval can still be significant. Otherwise the
replicates are paired at random (a fixed permutation), as for independent samples.
The interval is the difference +- ``sqrt(n / (n - 1)) t(n - 1)`` replicate standard
deviations (as each run's own, :mod:`mmseg_erf.engine.stats`); a difference whose
interval excludes 0 is marked significant.
"""
import csv
import os
from itertools import combinations
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..engine.stats import expansion, lookup
from .tables import table_paths

# (heading, dotted metric name)
DIFF_METRICS = [('area@0.2', 'area_ratio.0.2'), ('area@0.5', 'area_ratio.0.5'),
                ('area@0.99', 'area_ratio.0.99'), ('eff. radius', 'effective_radius'),
                ('ERF/TRF', 'erf_trf_ratio')]
COLUMNS = ['first', 'second', 'target', 'metric', 'first_value', 'second_value',
           'difference', 'low', 'high', 'paired', 'significant']


def paired(a, b) -> bool:
    """Whether two results resampled the same buckets of the same images."""
    ia, ib = a.meta.get('images'), b.meta.get('images')
    ca, cb = a.meta.get('intervals') or {}, b.meta.get('intervals') or {}
    same = all(ca.get(k) == cb.get(k) for k in ('buckets', 'replicates', 'seed'))
    return bool(ia and ib and ia == ib and ca and same)


def _replicates(result, target: str, name: str) -> Optional[np.ndarray]:
    group = result.groups[0]
    reps = ((result.replicates or {}).get(target) or {}).get(group)
    if not reps:
        return None
    if name == 'erf_trf_ratio':  # the radius over a constant: half the TRF side
        side = (result.metrics[target][group].get('trf') or {}).get('side')
        return None if not side else reps['effective_radius'] / (side / 2)
    return reps.get(name.replace('.', '/', 1))


def _buckets(result, target: str) -> int:
    reps = ((result.replicates or {}).get(target) or {}).get(result.groups[0]) or {}
    used = reps.get('buckets_used')
    return int(used[0]) if used is not None else 0


def difference(a, b, target: str, name: str, pair: bool) -> Dict[str, object]:
    va = lookup(a.metrics[target][a.groups[0]], name)
    vb = lookup(b.metrics[target][b.groups[0]], name)
    row = dict(first_value=va, second_value=vb, difference=None, low=None, high=None,
               paired=pair, significant=None)
    if va is None or vb is None:
        return row
    row['difference'] = diff = float(vb) - float(va)
    ra, rb = _replicates(a, target, name), _replicates(b, target, name)
    n = min(_buckets(a, target), _buckets(b, target))
    if ra is None or rb is None or len(ra) != len(rb) or n < 2:
        return row
    if not pair:
        ra = ra[np.random.default_rng(0).permutation(len(ra))]
    d = rb - ra
    d = d[np.isfinite(d)]
    if d.size < max(2, 0.5 * len(ra)):
        return row
    half = expansion(n) * float(np.std(d, ddof=1))
    row.update(low=diff - half, high=diff + half,
               significant=bool(diff - half > 0 or diff + half < 0))
    return row


def difference_rows(runs: Sequence, targets: Sequence[str]) -> List[Dict[str, object]]:
    """Every pair of runs (in order) x target x metric of :data:`DIFF_METRICS`."""
    rows = []
    for first, second in combinations(runs, 2):
        pair = paired(first.result, second.result)
        for target in targets:
            for _, name in DIFF_METRICS:
                row = dict(first=first.label, second=second.label, target=target,
                           metric=name)
                row.update(difference(first.result, second.result, target, name, pair))
                rows.append(row)
    return rows


def _fmt(value) -> str:
    return '-' if value is None else f'{value:+.4g}'


def differences_markdown(rows: Sequence[Dict[str, object]]) -> str:
    head = ['second - first', 'target', 'metric', 'difference', '95 % interval', 'paired',
            'significant']
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for r in rows:
        ci = '-' if r['low'] is None else f'[{_fmt(r["low"])}, {_fmt(r["high"])}]'
        cells = [f'{r["second"]} - {r["first"]}', str(r['target']), str(r['metric']),
                 _fmt(r['difference']), ci, 'yes' if r['paired'] else 'no',
                 {True: '*', False: '', None: '-'}[r['significant']]]
        lines.append('| ' + ' | '.join(c.replace('|', '\\|') for c in cells) + ' |')
    return '\n'.join(lines) + '\n\n* the 95 % interval of the difference excludes 0\n'


def write_differences(rows: Sequence[Dict[str, object]], out: str) -> Tuple[str, str]:
    """``FIG_differences.md`` and ``.csv`` next to the figure ``out``."""
    stem = os.path.splitext(out)[0] + '_differences'
    md, table = table_paths(stem + '.png')
    with open(md, 'w') as f:
        f.write(differences_markdown(rows))
    with open(table, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: '' if r[k] is None else r[k] for k in COLUMNS})
    return md, table


def significant_metrics(rows: Sequence[Dict[str, object]], second: str, target: str,
                        first: Optional[str] = None) -> List[str]:
    """The metrics in which run ``second`` differs significantly from run ``first``
    (default: from any earlier run): what the figure marks on its panel."""
    return [r['metric'] for r in rows
            if r['second'] == second and r['target'] == target and r['significant']
            and first in (None, r['first'])]
