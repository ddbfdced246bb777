"""``tools/erf_compare.py`` (``erf_compare``): parse, compare, print."""
import argparse
import sys
import warnings
from typing import List, Optional

from ..engine.plotting import CMAP, CMAPS, NORMALIZATIONS
from ..errors import ERFUsageError
from .modes import Outcome, compare, evolution
from .plots import Style
from .runs import run_kinds
from .tables import markdown_table

PROG = 'erf_compare.py'


# ---- command line -----------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description='Compare effective receptive fields: a grid of runs x targets, ERF '
                    'contours over an image, or the evolution of one target over '
                    'training. Writes FIG and its tables FIG.md and FIG.csv.')
    parser.add_argument('run_dirs', nargs='*', metavar='RUN_DIR',
                        help='run directories written by tools/erf_seg.py or ERFHook')
    parser.add_argument('--out', required=True, metavar='FIG.png',
                        help='figure path: .png, or .pdf / .svg for vector output; the '
                        'tables are written next to it')
    parser.add_argument('--labels', nargs='+', help='one row label per run (default: the '
                        'directory name, or the model name for erf/iter_<n> folders)')
    parser.add_argument('--targets', nargs='+', help='columns (default: the targets every '
                        'run has); with --evolution, the one target to draw')
    parser.add_argument('--scale', choices=['per-panel', 'shared'], default='per-panel',
                        help='colour scale: each panel divided by its own max (as in the '
                        'papers), or one max over all panels so magnitudes compare '
                        '(heatmaps only)')
    parser.add_argument('--normalization', choices=sorted(NORMALIZATIONS), default='replknet',
                        help='display normalisation: replknet log10(x+1), vmamba x**0.2')
    parser.add_argument('--resample', action='store_true',
                        help="resample runs of other input sizes to the first run's size "
                        '(bilinear, sum preserved) instead of refusing them')
    parser.add_argument('--overlay', metavar='IMAGE',
                        help='draw ERF contours over this image instead of heatmaps')
    parser.add_argument('--contours', choices=['squares', 'levels', 'both'], default='both',
                        help='overlay contours: the 20/50/99%% area squares, iso-levels '
                        '0.25/0.5/0.75 of the normalised map, or both')
    parser.add_argument('--evolution', metavar='ERF_DIR',
                        help="the hook's folder of iter_<n>/ snapshots (<work_dir>/erf): "
                        'one target over training')
    parser.add_argument('--dpi', type=int, default=100, help='figure resolution')
    # how the figure reads (a paper's own titles and colours)
    parser.add_argument('--titles', nargs='+', metavar='TITLE',
                        help='column titles, one per target (default: the target names); '
                        'point runs take theirs from --labels')
    parser.add_argument('--no-title', action='store_true',
                        help="leave out the figure's title line")
    parser.add_argument('--no-metrics', action='store_true',
                        help='leave out the metric lines under the panels')
    parser.add_argument('--cmap', choices=list(CMAPS), default=CMAP,
                        help="colour map: the papers' RdYlGn, or cividis / viridis "
                        '(colour-blind safe, print in greyscale)')
    return parser


def _style(args) -> Style:
    return Style(cmap=args.cmap, titles=args.titles, title=not args.no_title,
                 metrics=not args.no_metrics)


def run(args) -> Outcome:
    if args.dpi < 10:
        raise ERFUsageError(f'--dpi must be at least 10, got {args.dpi}')
    if args.evolution is None and run_kinds(args.run_dirs) == 'points':
        from .points import compare_points
        if args.targets and len(args.targets) > 1:
            raise ERFUsageError(f'point runs are compared one target at a time, got '
                                f'--targets {" ".join(args.targets)}; pass one')
        return compare_points(args.run_dirs, args.out, args.labels,
                              args.targets[0] if args.targets else None, args.dpi,
                              args.normalization, _style(args))
    if args.evolution is None:
        return compare(args.run_dirs, args.out, args.labels, args.targets, args.scale,
                       args.normalization, args.resample, args.overlay, args.contours,
                       args.dpi, style=_style(args))
    clash = [flag for flag, used in (('RUN_DIR', args.run_dirs), ('--overlay', args.overlay),
                                     ('--labels', args.labels), ('--titles', args.titles))
             if used]
    if clash:
        raise ERFUsageError(f'--evolution draws the snapshots of one folder and takes no '
                            f'{" or ".join(clash)}; run the grid or overlay separately')
    if args.targets and len(args.targets) > 1:
        raise ERFUsageError(f'--evolution draws one target, got --targets '
                            f'{" ".join(args.targets)}; pass one')
    return evolution(args.evolution, args.out, args.targets[0] if args.targets else None,
                     args.scale, args.normalization, args.resample, args.dpi,
                     style=_style(args))


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    caught: list = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always', UserWarning)
            rows, paths = run(args)
    except (OSError, ERFUsageError) as error:  # OSError: missing files, disk errors
        _print_warnings(caught)
        print(f'{PROG}: error: {" ".join(str(error).split())}', file=sys.stderr)
        return 2
    _print_warnings(caught)
    if rows and 'group' in rows[0]:  # point runs (compare_points)
        from .points import point_markdown
        print(point_markdown(rows))
    else:
        print(markdown_table(rows))
    for path in paths:
        if path.endswith('_differences.md'):
            with open(path) as f:
                print(f.read())
    print(f'written: {", ".join(paths)}')
    return 0


def _print_warnings(caught) -> None:
    for w in caught:
        if issubclass(w.category, UserWarning):
            print(f'{PROG}: warning: {w.message}', file=sys.stderr)
