"""The three comparison figures (grid, overlay, evolution) and their tables."""
import os
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..engine.plotting import NORMALIZATIONS
from ..errors import ERFUsageError
from . import plots
from .runs import Run, iteration_snapshots, load_runs, match_sizes, select_targets
from .differences import difference_rows, write_differences
from .tables import size_text, table_rows, write_tables

# what compare() and evolution() return: the table rows and the written paths
Outcome = Tuple[List[Dict[str, object]], List[str]]


# ---- the three modes --------------------------------------------------------------
def check_out(out: str) -> None:
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


def save_figure(fig, out: str, dpi: int) -> None:
    """Write the figure (its folder made now, after every input was read)."""
    if os.path.dirname(out):
        os.makedirs(os.path.dirname(out), exist_ok=True)
    plots.save(fig, out, dpi)


def compare(run_dirs: Sequence[str], out: str, labels: Optional[Sequence[str]] = None,
            targets: Optional[Sequence[str]] = None, scale: str = 'per-panel',
            normalization: str = 'replknet', resample: bool = False,
            overlay: Optional[str] = None, contours: str = 'both',
            dpi: int = 100, style: Optional[plots.Style] = None) -> Outcome:
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
        style: colour map, column titles, title and metric lines (:class:`plots.Style`).

    Returns:
        tuple: the table rows and the written paths (figure, Markdown, CSV).
    """
    _check_options(scale, normalization, contours)
    check_out(out)
    runs = match_sizes(load_runs(run_dirs, labels), resample)
    columns = select_targets(runs, targets)
    # before the figure, whose panels may mark them (compare/marks.py)
    diffs = difference_rows(runs, columns) if len(runs) > 1 else []
    if overlay is None:
        fig = plots.grid_figure(runs, columns, normalization, scale, style or plots.Style(),
                                diffs)
    else:
        image = load_overlay_image(overlay, runs[0].result.input_size)
        _warn_off_centre(runs)
        fig = plots.overlay_figure(runs, columns, image, normalization, contours,
                                   style or plots.Style(), diffs)
    save_figure(fig, out, dpi)
    rows = table_rows(runs, columns)
    paths = [out, *write_tables(rows, out)]
    if diffs:  # each pair's differences, paired where the images are the same
        paths += write_differences(diffs, out)
    return rows, paths


def evolution(erf_dir: str, out: str, target: Optional[str] = None,
              scale: str = 'per-panel', normalization: str = 'replknet',
              resample: bool = False, dpi: int = 100,
              style: Optional[plots.Style] = None) -> Outcome:
    """The hook's snapshots of one target over training, and its area-ratio curves.

    Args:
        erf_dir: folder of ``iter_<n>/`` run directories (``<work_dir>/erf``).
        target: the target drawn; default the first target of the first snapshot.
        Others as in :func:`compare`.
    """
    _check_options(scale, normalization, 'both')
    check_out(out)
    snapshots = iteration_snapshots(erf_dir)
    runs = load_runs([p for _, p in snapshots], [f'iter {n}' for n, _ in snapshots])
    # the hook writes every snapshot of a run at one size; a mismatch means a folder
    # shared by runs of different sizes, refused like any other mix
    runs = match_sizes(runs, resample)
    column = select_targets(runs, [target] if target else None)[0]
    iterations = [n for n, _ in snapshots]
    fig = plots.evolution_figure(runs, iterations, column, normalization, scale,
                                 style or plots.Style())
    save_figure(fig, out, dpi)
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

    from ..engine import fit_square
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
    # the area ratios are measured about the image centre (the squares are drawn
    # where the response is): a run whose response point is elsewhere has its
    # ratios measured away from its ERF
    for run in runs:
        point = run.result.meta.get('point')
        if point is not None and any(abs(float(p) - 0.5) > 1e-6 for p in point):
            warnings.warn(f'run {run.label} has its response point at {list(point)}, not the '
                          f'centre; its area ratios are measured about the image centre',
                          UserWarning,
                          stacklevel=3)


