"""Several input sizes in one command: one run per size, and each metric against the size.

At 224 every model covers the whole image and at 1024 few do: the size is part of
what an ERF number means. ``--input-size 256 512 1024`` runs each size into
``<out-dir>/size_<S>`` (a whole run each: its own resume state and metrics.json),
then writes ``<out-dir>/sizes.md``, ``sizes.csv`` and ``sizes.png`` (each metric
against the size, one line per target, the 95 % intervals as error bars).
"""
import copy
import csv
import os
import os.path as osp
from typing import Callable, Dict, List, Mapping, Sequence

from ..engine.stats import lookup
from ..errors import ERFUsageError

# (heading, dotted metric name) of the sweep's table and figure panels
SWEEP_METRICS = [('area@0.2', 'area_ratio.0.2'), ('area@0.5', 'area_ratio.0.5'),
                 ('area@0.99', 'area_ratio.0.99'), ('eff. radius (px)', 'effective_radius'),
                 ('ERF/TRF', 'erf_trf_ratio')]


def size_dir(out_dir: str, size: int) -> str:
    return osp.join(out_dir, f'size_{int(size)}')


def check_sizes(sizes: Sequence[int], name: str = '--input-size') -> List[int]:
    sizes = [int(s) for s in sizes]
    if len(set(sizes)) != len(sizes) or any(s < 1 for s in sizes):
        raise ERFUsageError(f'{name} {" ".join(map(str, sizes))} must list distinct positive '
                            f'sizes, e.g. 256 512 1024')
    return sorted(sizes)


def one_size(size):
    """The size of one run (the CLI's main hands several to :func:`run_sizes`)."""
    if isinstance(size, (list, tuple)):
        if len(size) != 1:
            raise ERFUsageError(f'one run takes one --input-size, got {len(size)}; run '
                                f'several through main (one run per size)')
        return int(size[0])
    return size


def run_sizes(args, run: Callable) -> Dict[int, object]:
    """The command line's sweep: ``run(args)`` once per size, then the sweep files."""
    from mmengine.dist import is_main_process
    sizes = check_sizes(args.input_size)
    config_name = osp.splitext(osp.basename(args.config))[0]
    out_dir = args.out_dir or osp.join('work_dirs', config_name, 'erf')
    results = {}
    for size in sizes:
        one = copy.copy(args)
        one.input_size, one.out_dir = size, size_dir(out_dir, size)
        results[size] = run(one)
    if is_main_process():
        paths = write_sweep(out_dir, results)
        print(sweep_markdown(sweep_rows(results)))
        print(f'sizes: {", ".join(paths)}')
    return results


def sweep_rows(results: Mapping[int, object]) -> List[Dict[str, object]]:
    """One row per size x target (the only group of classic runs, else every group)."""
    rows = []
    for size in sorted(results):
        result = results[size]
        for target in result.targets:
            for group in result.groups:
                m = result.metrics[target][group]
                row = dict(size=size, target=target if result.is_classic else
                           f'{target}/{group}', num_images=result.num_images,
                           trf_side=(m.get('trf') or {}).get('side'))
                for _, name in SWEEP_METRICS:
                    row[name] = lookup(m, name)
                    bounds = lookup(m.get('ci95') or {}, name)
                    row[f'{name} ci95'] = bounds if isinstance(bounds, list) else None
                rows.append(row)
    return rows


def _text(value, bounds) -> str:
    if value is None:
        return '-'
    if bounds is None or None in bounds:
        return f'{value:.4g}'
    return f'{value:.4g} [{bounds[0]:.4g}, {bounds[1]:.4g}]'


def sweep_markdown(rows: Sequence[Dict[str, object]]) -> str:
    head = ['size', 'target', 'N', 'TRF side'] + [h for h, _ in SWEEP_METRICS]
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for r in rows:
        cells = [str(r['size']), str(r['target']), str(r['num_images']),
                 '-' if r['trf_side'] is None else str(r['trf_side'])]
        cells += [_text(r[n], r[f'{n} ci95']) for _, n in SWEEP_METRICS]
        lines.append('| ' + ' | '.join(c.replace('|', '\\|') for c in cells) + ' |')
    return '\n'.join(lines) + '\n'


def write_sweep(out_dir: str, results: Mapping[int, object]) -> List[str]:
    """``sizes.md``, ``sizes.csv`` (full precision, intervals as low/high columns) and
    ``sizes.png`` in ``out_dir``; returns their paths."""
    from ..engine.files import replacing
    rows = sweep_rows(results)
    os.makedirs(out_dir, exist_ok=True)
    md, table, fig = (osp.join(out_dir, f'sizes.{ext}') for ext in ('md', 'csv', 'png'))
    with replacing(md) as tmp, open(tmp, 'w') as f:
        f.write(sweep_markdown(rows))
    columns = ['size', 'target', 'num_images', 'trf_side']
    for _, name in SWEEP_METRICS:
        columns += [name, f'{name} low', f'{name} high']
    with replacing(table) as tmp, open(tmp, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for r in rows:
            out = {k: r.get(k) for k in columns[:4]}
            for _, name in SWEEP_METRICS:
                bounds = r[f'{name} ci95'] or [None, None]
                out.update({name: r[name], f'{name} low': bounds[0], f'{name} high': bounds[1]})
            writer.writerow({k: '' if v is None else v for k, v in out.items()})
    with replacing(fig) as tmp:
        sweep_figure(rows).savefig(tmp, dpi=100)
    return [md, table, fig]


def sweep_figure(rows: Sequence[Dict[str, object]]):
    """Each metric against the input size, one line per target, intervals as bars;
    area ratios in percent, the sizes themselves as ticks."""
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, NullLocator
    fig = Figure(figsize=(3.2 * len(SWEEP_METRICS), 3.0), layout='constrained')
    axes = fig.subplots(1, len(SWEEP_METRICS))
    targets = list(dict.fromkeys(r['target'] for r in rows))
    sizes = sorted({int(r['size']) for r in rows})
    for ax, (heading, name) in zip(axes, SWEEP_METRICS):
        scale = 100.0 if name.startswith('area') else 1.0
        for target in targets:
            own = [r for r in rows if r['target'] == target and r[name] is not None]
            if not own:
                continue
            xs = [r['size'] for r in own]
            ys = [r[name] * scale for r in own]
            bounds = [r[f'{name} ci95'] or [r[name]] * 2 for r in own]
            err = [[max(0.0, y - low * scale) for y, (low, _) in zip(ys, bounds)],
                   [max(0.0, high * scale - y) for y, (_, high) in zip(ys, bounds)]]
            ax.errorbar(xs, ys, yerr=err, marker='o', capsize=3, label=target)
        ax.set_xscale('log', base=2)
        ax.xaxis.set_major_locator(FixedLocator(sizes))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([str(s) for s in sizes])
        ax.set_xlabel('input size S (px)')
        ax.set_title(heading + (' (%)' if scale != 1.0 else ''), fontsize=10)
    axes[0].legend(fontsize=7)
    fig.suptitle('95 % intervals: bootstrap over image buckets', fontsize=9)
    return fig
