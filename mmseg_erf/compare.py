"""Comparing ERF runs: the logic and the command line of ``tools/erf_compare.py``.

Three modes, all reading run directories written by :meth:`ERFResult.write`
(``tools/erf_seg.py``, :func:`compute_erf` and ``ERFHook`` snapshots):

* grid: one row per run, one column per target, heatmaps on one colour bar;
* ``--overlay IMAGE``: ERF contours drawn over one image at each run's geometry;
* ``--evolution ERF_DIR``: the hook's ``iter_<n>/`` snapshots of one target in
  iteration order, with the area ratios plotted against the iteration.

Every mode writes the figure and, next to it, a Markdown and a CSV table
(``FIG.md``, ``FIG.csv``). Figures are drawn in :mod:`mmseg_erf.compare_plots`.
"""
import argparse
import os
import re
import sys
import warnings
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .compare_tables import markdown_table, size_text, table_rows, write_tables
from .engine import ERFResult
from .engine.result import METRICS_FILE
from .engine.plotting import NORMALIZATIONS
from .errors import ERFUsageError

PROG = 'erf_compare.py'
# run-directory names that say nothing about the run: the default output folder
# of erf_seg.py and the hook, and the hook's snapshot names
_GENERIC_NAME = re.compile(r'^(erf|out|output|outputs|results?|val|test|iter_\d+)$')
_SNAPSHOT = re.compile(r'^iter_(\d+)$')


# what compare() and evolution() return: the table rows and the written paths
Outcome = Tuple[List[Dict[str, object]], List[str]]


class ResampleWarning(UserWarning):
    """Maps of another input size were resampled to the first run's size."""


@dataclass(frozen=True)
class Run:
    """One run directory as it is drawn.

    Attributes:
        label: row label and table key.
        path: the run directory.
        result: its maps and metrics (resampled ones when ``resampled_from`` is set).
        resampled_from: the run's own input size when its maps were resampled.
    """
    label: str
    path: str
    result: ERFResult
    resampled_from: Optional[Tuple[int, int]] = None


# ---- loading and checking ---------------------------------------------------------
def read_run(path: str) -> ERFResult:
    """:meth:`ERFResult.read`, with a message that says which argument was wrong."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f'run directory {path} does not exist; pass folders '
                                f'written by tools/erf_seg.py or by ERFHook')
    if not os.path.isfile(os.path.join(path, METRICS_FILE)):
        return ERFResult.read(path)  # its FileNotFoundError says what the folder lacks
    try:
        return ERFResult.read(path)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        # a metrics.json cut short or edited, a map file missing or not a .npy
        detail = error.args[0] if isinstance(error, KeyError) and error.args else error
        raise ERFUsageError(f'run directory {path} is damaged ({type(error).__name__}: '
                            f'{" ".join(str(detail).split())}); compute it again with '
                            f'tools/erf_seg.py, or leave it out') from None


def default_label(path: str, result: ERFResult) -> str:
    """The directory name, or the model name where the name says nothing (``erf``, ``iter_N``)."""
    name = os.path.basename(os.path.normpath(os.path.abspath(path)))
    if not _GENERIC_NAME.match(name):
        return name
    if result.model_name:
        # 'erf' adds nothing to the model name; a snapshot name does ('iter_400')
        return result.model_name if name == 'erf' else f'{result.model_name} {name}'
    parent = os.path.basename(os.path.dirname(os.path.normpath(os.path.abspath(path))))
    return f'{parent}/{name}' if parent else name


def make_labels(paths: Sequence[str], results: Sequence[ERFResult],
                labels: Optional[Sequence[str]] = None) -> List[str]:
    """Given labels (one per run), or default ones made unique with ``#k``."""
    if labels:
        if len(labels) != len(paths):
            raise ERFUsageError(f'--labels has {len(labels)} label(s) for {len(paths)} run '
                                f'directories; pass one label per run, in the same order')
        return list(labels)
    names = [default_label(p, r) for p, r in zip(paths, results)]
    # numbering keeps two runs of one config apart without guessing
    return [f'{name} #{i + 1}' if names.count(name) > 1 else name
            for i, name in enumerate(names)]


def load_runs(paths: Sequence[str], labels: Optional[Sequence[str]] = None) -> List[Run]:
    if not paths:
        raise ERFUsageError('no run directory given; pass one or more folders written by '
                            'tools/erf_seg.py (or --evolution with the hook\'s erf folder)')
    results = [read_run(p) for p in paths]
    for path, result in zip(paths, results):
        if result.meta.get('partial'):
            warnings.warn(f'{path} holds the partial result of an interrupted run '
                          f'({result.num_images} images); finish it with erf_seg.py --resume',
                          UserWarning, stacklevel=2)
    return [Run(label, path, result) for label, path, result in
            zip(make_labels(paths, results, labels), paths, results)]


def select_targets(runs: Sequence[Run], targets: Optional[Sequence[str]] = None) -> List[str]:
    """The requested targets (each present in every run), or those common to all runs.

    The default keeps the first run's order, so the columns read as that run was computed.
    """
    if targets:
        for run in runs:
            missing = [t for t in targets if t not in run.result.maps]
            if missing:
                raise ERFUsageError(
                    f'target {", ".join(missing)} is not in run {run.label} ({run.path}), '
                    f'which has {", ".join(run.result.targets)}; pass --targets with '
                    f'targets every run has')
        return list(targets)
    common = [t for t in runs[0].result.targets
              if all(t in run.result.maps for run in runs[1:])]
    if not common:
        have = '; '.join(f'{r.label}: {", ".join(r.result.targets)}' for r in runs)
        raise ERFUsageError(f'no target is common to all runs ({have}); compare runs '
                            f'computed for at least one shared target')
    return common


def _linear_weights(src: int, dst: int) -> np.ndarray:
    """(dst, src) bilinear weights along one axis, centre pixel onto centre pixel.

    The metrics measure from pixel ``n // 2``; aligning corners instead would move
    the ERF's peak half a pixel off that centre at even sizes. Shrinking widens the
    triangle kernel to the source spacing (antialiasing), so a narrow ERF is not
    lost between samples.
    """
    step = src / dst
    pos = (np.arange(dst) - dst // 2) * step + src // 2
    pos = np.clip(pos, 0, src - 1)  # the last half pixel repeats the edge
    width = max(1.0, step)
    weights = np.clip(1 - np.abs(np.arange(src)[None, :] - pos[:, None]) / width, 0, None)
    return weights / weights.sum(1, keepdims=True)


def resample_map(erf_map: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Bilinear resampling to ``size`` that keeps the map's sum (its total gradient mass)."""
    erf_map = np.asarray(erf_map, dtype=np.float64)
    if tuple(erf_map.shape) == tuple(size):
        return erf_map.copy()
    rows = _linear_weights(erf_map.shape[0], int(size[0]))
    cols = _linear_weights(erf_map.shape[1], int(size[1]))
    out = rows @ erf_map @ cols.T
    total = out.sum()
    return out * (erf_map.sum() / total) if total > 0 else out


def resample_result(result: ERFResult, size: Tuple[int, int]) -> ERFResult:
    """The result at another input size; metrics are recomputed on the resampled maps."""
    return ERFResult(maps={t: resample_map(m, size) for t, m in result.maps.items()},
                     num_images=result.num_images, skipped=result.skipped, input_size=size,
                     model_name=result.model_name,
                     meta=dict(result.meta, resampled_from=list(result.input_size)))


def match_sizes(runs: Sequence[Run], resample: bool = False) -> List[Run]:
    """Refuse runs of different input sizes, or resample them to the first run's size.

    Maps of different sizes are never drawn or tabulated side by side silently: a
    pixel, an area ratio and a radius all mean something else at another size.
    """
    size = runs[0].result.input_size
    other = [r for r in runs if r.result.input_size != size]
    if not other:
        return list(runs)
    sizes = ', '.join(f'{r.label} ({r.path}) is {size_text(r.result.input_size)}' for r in runs)
    if not resample:
        raise ERFUsageError(f'runs have different input sizes: {sizes}; pass --resample to '
                            f'resample every map to {size_text(size)} (the first run\'s size), '
                            f'or compare runs of one size')
    warnings.warn(f'resampling {", ".join(r.label for r in other)} to {size_text(size)} '
                  f'(bilinear, sum preserved; metrics recomputed): {sizes}', ResampleWarning,
                  stacklevel=2)
    return [Run(r.label, r.path, resample_result(r.result, size), r.result.input_size)
            if r.result.input_size != size else r for r in runs]


def iteration_snapshots(erf_dir: str) -> List[Tuple[int, str]]:
    """``(n, path)`` of the ``iter_<n>/`` run directories in ``erf_dir``, by number."""
    if not os.path.isdir(erf_dir):
        raise FileNotFoundError(f'--evolution folder {erf_dir} does not exist; pass the '
                                f"hook's folder of snapshots (<work_dir>/erf)")
    found = []
    for name in os.listdir(erf_dir):
        match = _SNAPSHOT.match(name)
        path = os.path.join(erf_dir, name)
        if match and os.path.isfile(os.path.join(path, 'metrics.json')):
            found.append((int(match.group(1)), path))
    if not found:
        raise ERFUsageError(f'{erf_dir} holds no iter_<n>/ snapshot with a metrics.json; '
                            f"pass the hook's folder of snapshots (<work_dir>/erf), not one "
                            f'run directory')
    # numeric, not lexical: iter_10 comes after iter_2
    return sorted(found)


# ---- the three modes --------------------------------------------------------------
def _check_out(out: str) -> None:
    """Refuse a figure path that cannot be written; nothing is created before the
    inputs have all been read (:func:`_save`)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    ext = os.path.splitext(out)[1].lower().lstrip('.')
    supported = FigureCanvasAgg.get_supported_filetypes()
    if ext not in supported:
        raise ERFUsageError(f'--out {out} has no figure extension matplotlib writes; end it '
                            f'in .png, .pdf or .svg')
    if os.path.isdir(out):
        raise ERFUsageError(f'--out {out} is a folder; pass a figure file path such as '
                            f'{os.path.join(out, "compare.png")}')
    parent = os.path.dirname(os.path.abspath(out))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ERFUsageError(f'--out {out} cannot be created: {parent} is a file; pass a path '
                            f'in a folder')
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ERFUsageError(f'--out {out} cannot be written ({parent} is not writable); pass '
                            f'a path you can write to')


def _save(fig, out: str, dpi: int) -> None:
    from . import compare_plots
    if os.path.dirname(out):
        os.makedirs(os.path.dirname(out), exist_ok=True)
    compare_plots.save(fig, out, dpi)


def compare(run_dirs: Sequence[str], out: str, labels: Optional[Sequence[str]] = None,
            targets: Optional[Sequence[str]] = None, scale: str = 'per-panel',
            normalization: str = 'replknet', resample: bool = False,
            overlay: Optional[str] = None, contours: str = 'both',
            dpi: int = 100) -> Outcome:
    """Grid (or overlay) figure of several runs, and its tables.

    Args:
        run_dirs: run directories; the first sets the size maps are resampled to.
        out: figure path; the tables go to the same path with ``.md`` and ``.csv``.
        labels: one per run; default :func:`default_label`.
        targets: columns; default the targets common to all runs, first run's order.
        scale: 'per-panel' (each map divided by its own max, as in the papers) or
            'shared' (one maximum over all panels, so magnitudes compare).
        normalization: 'replknet' (log10(x+1)) or 'vmamba' (x**0.2).
        resample: resample runs of other input sizes instead of refusing them.
        overlay: an image path: draw contours over it instead of heatmaps.
        contours: overlay contours: 'squares' (area squares), 'levels' (iso-levels
            of the normalised map) or 'both'.
        dpi: figure resolution.

    Returns:
        tuple: the table rows and the written paths (figure, Markdown, CSV).
    """
    from . import compare_plots
    _check_options(scale, normalization, contours)
    _check_out(out)
    runs = match_sizes(load_runs(run_dirs, labels), resample)
    columns = select_targets(runs, targets)
    if overlay is None:
        fig = compare_plots.grid_figure(runs, columns, normalization, scale)
    else:
        image = load_overlay_image(overlay, runs[0].result.input_size)
        _warn_off_centre(runs)
        fig = compare_plots.overlay_figure(runs, columns, image, normalization, contours)
    _save(fig, out, dpi)
    rows = table_rows(runs, columns)
    return rows, [out, *write_tables(rows, out)]


def evolution(erf_dir: str, out: str, target: Optional[str] = None,
              scale: str = 'per-panel', normalization: str = 'replknet',
              resample: bool = False, dpi: int = 100) -> Outcome:
    """The hook's snapshots of one target over training, and its area-ratio curves.

    Args:
        erf_dir: folder of ``iter_<n>/`` run directories (``<work_dir>/erf``).
        target: the target drawn; default the first target of the first snapshot.
        Others as in :func:`compare`.
    """
    from . import compare_plots
    _check_options(scale, normalization, 'both')
    _check_out(out)
    snapshots = iteration_snapshots(erf_dir)
    runs = load_runs([p for _, p in snapshots], [f'iter {n}' for n, _ in snapshots])
    # the hook writes every snapshot of a run at one size; a mismatch means a folder
    # shared by runs of different sizes, refused like any other mix
    runs = match_sizes(runs, resample)
    column = select_targets(runs, [target] if target else None)[0]
    iterations = [n for n, _ in snapshots]
    fig = compare_plots.evolution_figure(runs, iterations, column, normalization, scale)
    _save(fig, out, dpi)
    rows = table_rows(runs, [column])
    return rows, [out, *write_tables(rows, out)]


def _check_options(scale: str, normalization: str, contours: str) -> None:
    if scale not in ('per-panel', 'shared'):
        raise ERFUsageError(f'scale {scale!r} is unknown; use per-panel or shared')
    if normalization not in NORMALIZATIONS:
        raise ERFUsageError(f'normalization {normalization!r} is unknown; use '
                            f'{" or ".join(sorted(NORMALIZATIONS))}')
    if contours not in ('squares', 'levels', 'both'):
        raise ERFUsageError(f'contours {contours!r} is unknown; use squares, levels or both')


def load_overlay_image(path: str, size: Tuple[int, int]) -> np.ndarray:
    """The image as RGB uint8 at the run's S x S geometry (short side to S, centre crop)."""
    import torch
    from PIL import Image, UnidentifiedImageError

    from .engine import fit_square
    if size[0] != size[1]:
        raise ERFUsageError(f'the runs have a non-square input size {size_text(size)}; '
                            f'--overlay needs the S x S geometry erf_seg.py writes')
    if not os.path.isfile(path):
        raise FileNotFoundError(f'overlay image {path} does not exist; pass --overlay with '
                                f'an image file')
    try:
        with Image.open(path) as img:
            rgb = np.asarray(img.convert('RGB'))
    except (UnidentifiedImageError, OSError) as error:
        raise ERFUsageError(f'overlay image {path} cannot be read ({error}); pass a '
                            f'PNG or JPEG file') from None
    square = fit_square(torch.from_numpy(rgb.copy()).permute(2, 0, 1), size[0])
    return square.permute(1, 2, 0).clamp(0, 255).round().to(torch.uint8).numpy()


def _warn_off_centre(runs: Sequence[Run]) -> None:
    # the area squares are centred on the map, as the metrics are: a run whose
    # response point is elsewhere has its ERF away from them
    for run in runs:
        point = run.result.meta.get('point')
        if point is not None and any(abs(float(p) - 0.5) > 1e-6 for p in point):
            warnings.warn(f'run {run.label} has its response point at {list(point)}, not the '
                          f'centre; the area squares are centred on the map', UserWarning,
                          stacklevel=3)


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
                        help='figure path; the tables are written next to it')
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
    return parser


def run(args) -> Outcome:
    if args.dpi < 10:
        raise ERFUsageError(f'--dpi must be at least 10, got {args.dpi}')
    from .engine import is_point_run
    if args.evolution is None and args.run_dirs and all(map(is_point_run, args.run_dirs)):
        from .compare_points import compare_points
        if args.targets and len(args.targets) > 1:
            raise ERFUsageError(f'point runs are compared one target at a time, got '
                                f'--targets {" ".join(args.targets)}; pass one')
        return compare_points(args.run_dirs, args.out, args.labels,
                              args.targets[0] if args.targets else None, args.dpi)
    if args.evolution is None:
        return compare(args.run_dirs, args.out, args.labels, args.targets, args.scale,
                       args.normalization, args.resample, args.overlay, args.contours,
                       args.dpi)
    clash = [flag for flag, used in (('RUN_DIR', args.run_dirs), ('--overlay', args.overlay),
                                     ('--labels', args.labels)) if used]
    if clash:
        raise ERFUsageError(f'--evolution draws the snapshots of one folder and takes no '
                            f'{" or ".join(clash)}; run the grid or overlay separately')
    if args.targets and len(args.targets) > 1:
        raise ERFUsageError(f'--evolution draws one target, got --targets '
                            f'{" ".join(args.targets)}; pass one')
    return evolution(args.evolution, args.out, args.targets[0] if args.targets else None,
                     args.scale, args.normalization, args.resample, args.dpi)


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
        from .compare_points import point_markdown
        print(point_markdown(rows))
    else:
        print(markdown_table(rows))
    print(f'written: {", ".join(paths)}')
    return 0


def _print_warnings(caught) -> None:
    for w in caught:
        if issubclass(w.category, UserWarning):
            print(f'{PROG}: warning: {w.message}', file=sys.stderr)
