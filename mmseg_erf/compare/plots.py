"""Figures of :mod:`mmseg_erf.compare`: heatmap grid, contour overlay, evolution.

Layouts are fixed in inches (no tight_layout, no tight bounding box), so a figure
of R runs x C targets is exactly :func:`grid_size_inches` at the given dpi, and
panels stay square and the same size whatever the labels. What a reader may
change for a paper (colour map, column titles, title and metric lines) is one
:class:`Style`.
"""
import textwrap
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from matplotlib import patheffects
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import FuncFormatter

from ..engine.plotting import CMAP, SCALE_NAMES, check_cmap, metrics_line, normalize
from .differences import significant_metrics
from .marks import draw_trf_outline, mark_significant
from ..errors import ERFUsageError

PANEL = 2.4       # side of one map panel
COL_GAP = 0.15    # between columns
ROW_TEXT = 0.45   # below each panel: the line of metrics
TITLE = 0.25      # above each evolution panel: its iteration
LEFT = 0.75       # row labels
TOP = 0.75        # title and column titles
TOP_BARE = 0.4    # column titles only (no figure title)
ROW_TEXT_BARE = 0.1  # below each panel without its metric lines
RIGHT = 0.95      # colour bar and its label
BOTTOM = 0.15
LEGEND = 0.4      # extra bottom margin of the overlay legend
PLOT = 2.4        # height of the evolution's line plot
PLOT_MIN_WIDTH = 4.5
PLOT_TOP = 0.4    # above the line plot: its title
PLOT_BOTTOM = 0.6  # below it: the x label
PLOT_LEFT = 0.9   # left of the line plot: its percent ticks and y label
EVOLUTION_COLS = 6

# RepLKNet's and VMamba's display transforms before division by the maximum
# (as in engine.metrics); needed raw for one maximum shared by all panels
_TRANSFORMS = {'replknet': lambda m: np.log10(m + 1), 'vmamba': lambda m: np.power(m, 0.2)}
SQUARE_COLOURS = {'0.2': '#ffe119', '0.5': '#f58231', '0.99': '#e6194b'}
LEVEL_COLOURS = {0.25: '#42d4f4', 0.5: '#3cb44b', 0.75: '#ffffff'}
THRESHOLD_COLOURS = {'0.2': '#4363d8', '0.3': '#3cb44b', '0.5': '#f58231', '0.99': '#e6194b'}
_STROKE = [patheffects.withStroke(linewidth=3, foreground='black')]
# the rule the overlay's squares follow, printed under its legend
SQUARE_RULE = ("squares: the area-ratio sides, centred on each map's Gaussian-fit centre "
               '(the metrics measure them about the image centre)')


@dataclass(frozen=True)
class Style:
    """How a comparison figure reads: colour map, column titles (one per target; default
    the target names), the figure's title line and the metric lines under the panels."""
    cmap: str = CMAP
    titles: Optional[Sequence[str]] = None
    title: bool = True
    metrics: bool = True

    def __post_init__(self):
        try:
            check_cmap(self.cmap)
        except ValueError as error:
            raise ERFUsageError(str(error)) from None

    def column_titles(self, targets: Sequence[str]) -> List[str]:
        if self.titles is None:
            return list(targets)
        if len(self.titles) != len(targets):
            raise ERFUsageError(f'{len(self.titles)} titles for {len(targets)} targets '
                                f'({" ".join(targets)}); pass one per target')
        return list(self.titles)

    @property
    def top(self) -> float:
        return TOP if self.title else TOP_BARE

    @property
    def row_text(self) -> float:
        return ROW_TEXT if self.metrics else ROW_TEXT_BARE


def grid_size_inches(rows: int, cols: int, legend: bool = False,
                     style: Style = Style()) -> Tuple[float, float]:
    """(width, height) of a grid figure of ``rows`` x ``cols`` panels."""
    width = LEFT + cols * (PANEL + COL_GAP) - COL_GAP + RIGHT
    height = (style.top + rows * (PANEL + style.row_text) + BOTTOM
              + (LEGEND if legend else 0.0))
    return width, height


def display_maps(maps: Sequence[np.ndarray], normalization: str,
                 scale: str) -> List[np.ndarray]:
    """Maps in [0, 1]: each over its own max ('per-panel') or over the max of all ('shared')."""
    if scale == 'per-panel':
        return [normalize(m, normalization) for m in maps]
    raw = [_TRANSFORMS[normalization](np.asarray(m, dtype=np.float64)) for m in maps]
    peak = max(float(r.max()) for r in raw)
    return [r / peak if peak > 0 else r for r in raw]


def save(fig: Figure, out: str, dpi: int) -> None:
    # no bbox_inches='tight': it would change the size the layout promises
    fig.savefig(out, dpi=dpi, facecolor='white')


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _axes(fig: Figure, left: float, top: float, width: float, height: float):
    """Axes placed in inches from the figure's top-left corner."""
    fig_w, fig_h = fig.get_size_inches()
    return fig.add_axes([left / fig_w, 1 - (top + height) / fig_h, width / fig_w,
                         height / fig_h])


def _panel(fig: Figure, row: int, col: int, style: Style, titled: bool = False):
    """The map axes at ``(row, col)``; ``titled`` rows leave room for a title on each panel."""
    step = PANEL + style.row_text + (TITLE if titled else 0.0)
    ax = _axes(fig, LEFT + col * (PANEL + COL_GAP), style.top + row * step, PANEL, PANEL)
    ax.set_xticks([])
    ax.set_yticks([])
    return ax


def _wrap(text: str, width: int = 30) -> str:
    return '\n'.join(textwrap.wrap(text, width)) or text


def _caption(ax, metrics: Dict, style: Style) -> None:
    if style.metrics:
        ax.set_xlabel(metrics_line(metrics), fontsize=7)


def _suptitle(fig: Figure, text: str, style: Style) -> None:
    if style.title:
        fig.suptitle(text, fontsize=10, y=1 - 0.15 / fig.get_size_inches()[1], va='top')


def _row_label(run) -> str:
    size = 'x'.join(str(s) for s in run.result.input_size)
    if run.resampled_from:
        size += ' (resampled from ' + 'x'.join(str(s) for s in run.resampled_from) + ')'
    return f'{_wrap(run.label)}\nN={run.result.num_images}, {size}'


def _colour_bar(fig: Figure, image, rows: int, cols: int, label: str, style: Style) -> None:
    left = LEFT + cols * (PANEL + COL_GAP) - COL_GAP + 0.15
    height = rows * (PANEL + style.row_text) - style.row_text
    cax = _axes(fig, left, style.top, 0.15, min(height, 2 * PANEL + style.row_text))
    bar = fig.colorbar(image, cax=cax)
    bar.set_label(label, fontsize=8)
    bar.ax.tick_params(labelsize=7)


def _scale_label(normalization: str, scale: str) -> str:
    over = 'its own max' if scale == 'per-panel' else 'the max of all panels'
    return f'{SCALE_NAMES[normalization]} / {over}'


def _marks(ax, runs, row: int, target: str, diffs: Sequence[Dict], shape) -> None:
    """The panel's TRF outline, and (rows after the first) the metrics that differ
    significantly from the first run."""
    run = runs[row]
    draw_trf_outline(ax, run.result.metrics_of(target).get('trf'), shape)
    if row and diffs:
        mark_significant(ax, significant_metrics(diffs, run.label, target,
                                                 first=runs[0].label), against=runs[0].label)


def grid_figure(runs, targets: Sequence[str], normalization: str, scale: str,
                style: Style = Style(), diffs: Sequence[Dict] = ()) -> Figure:
    """Heatmaps: one row per run, one column per target, one colour bar; the TRF
    outlined, and ``diffs`` (:mod:`.differences`) marked on the panels they concern."""
    rows, cols = len(runs), len(targets)
    titles = style.column_titles(targets)
    fig = _new_figure(*grid_size_inches(rows, cols, style=style))
    maps = [run.result.map(t) for run in runs for t in targets]
    shown = display_maps(maps, normalization, scale)
    image = None
    for k, data in enumerate(shown):
        row, col = divmod(k, cols)
        run, target = runs[row], targets[col]
        ax = _panel(fig, row, col, style)
        image = ax.imshow(data, cmap=style.cmap, vmin=0.0, vmax=1.0)
        _marks(ax, runs, row, target, diffs, data.shape)
        _caption(ax, run.result.metrics_of(target), style)
        if row == 0:
            ax.set_title(_wrap(titles[col]), fontsize=9)
        if col == 0:
            ax.set_ylabel(_row_label(run), fontsize=8)
    _colour_bar(fig, image, rows, cols, _scale_label(normalization, scale), style)
    _suptitle(fig, f'Effective receptive fields ({normalization} normalisation, '
                   f'{scale} scale)', style)
    return fig


def square_centre(metrics: Dict, size: Tuple[int, int]) -> Tuple[float, float]:
    """(y, x) in pixels where the overlay centres its squares: the centre of the map's
    Gaussian fit (``shape.gaussian.center``, (dy, dx) from (H // 2, W // 2)), else its
    centre of mass (``center_of_mass``), else the image centre.

    The fit's centre is where the response is: on Swin-T at 384 it sits at the centre
    of the response cell of every stage (1.5, 3.6, 7.5, 15.7 px off for strides 4 to
    32), while the centre of mass, pulled by the faint mass spread over the whole
    image, was 6 px off the other way for backbone.3 and put the squares beside the
    response. A fit centre outside the map (a failed fit) is not used.
    """
    cy, cx = size[0] // 2, size[1] // 2
    fit = ((metrics.get('shape') or {}).get('gaussian') or {}).get('center')
    for offset in (fit, metrics.get('center_of_mass')):
        if offset is None or None in offset:
            continue
        y, x = cy + float(offset[0]), cx + float(offset[1])
        if 0 <= y <= size[0] - 1 and 0 <= x <= size[1] - 1:
            return y, x
    return float(cy), float(cx)


def _draw_squares(ax, metrics: Dict, size: Tuple[int, int]) -> None:
    cy, cx = square_centre(metrics, size)
    for threshold, colour in SQUARE_COLOURS.items():
        side = metrics['area_side'].get(threshold)
        if side is None:  # no square inside the map holds that share
            continue
        # pixel centres are integers in imshow coordinates: a square of odd side around
        # pixel c spans c - side / 2 .. c + side / 2
        ax.add_patch(Rectangle((cx - side / 2, cy - side / 2), side, side, fill=False,
                               edgecolor=colour, linewidth=1.6, path_effects=_STROKE))


def _draw_levels(ax, data: np.ndarray) -> None:
    if not data.max() > data.min():  # a flat map has no iso-line
        return
    ax.contour(data, levels=sorted(LEVEL_COLOURS), colors=[LEVEL_COLOURS[k] for k in
                                                           sorted(LEVEL_COLOURS)],
               linewidths=1.2, linestyles='dashed')


def _overlay_legend(fig: Figure, contours: str) -> None:
    handles = []
    if contours in ('squares', 'both'):
        handles += [Line2D([], [], color=c, lw=1.6, path_effects=_STROKE,
                           label=f'{float(t) * 100:.0f} % area square')
                    for t, c in SQUARE_COLOURS.items()]
    if contours in ('levels', 'both'):
        handles += [Line2D([], [], color=c, lw=1.2, ls='--', path_effects=_STROKE,
                           label=f'level {k:g} of the normalised map')
                    for k, c in LEVEL_COLOURS.items()]
    fig_h = fig.get_size_inches()[1]
    fig.legend(handles=handles, loc='lower center', ncol=min(len(handles), 3),
               fontsize=7, frameon=False, handlelength=3,
               bbox_to_anchor=(0.5, (BOTTOM / 2 + 0.12) / fig_h))
    if contours in ('squares', 'both'):
        fig.text(0.5, 0.06 / fig_h, SQUARE_RULE, ha='center', va='bottom', fontsize=6.5)


def overlay_figure(runs, targets: Sequence[str], image: np.ndarray, normalization: str,
                   contours: str, style: Style = Style(), diffs: Sequence[Dict] = ()) -> Figure:
    """ERF contours over one image: one panel per run x target, a legend below.

    The squares have the sides of the 20/50/99 % area ratios and are centred where
    each map's response is (:func:`square_centre`); the iso-levels are the map's own.
    The legend is this figure's key (it has no colour-mapped values to bar).
    """
    rows, cols = len(runs), len(targets)
    titles = style.column_titles(targets)
    fig = _new_figure(*grid_size_inches(rows, cols, legend=True, style=style))
    for row, run in enumerate(runs):
        for col, target in enumerate(targets):
            ax = _panel(fig, row, col, style)
            ax.imshow(image)
            size = run.result.input_size
            if contours in ('squares', 'both'):
                _draw_squares(ax, run.result.metrics_of(target), size)
            if contours in ('levels', 'both'):
                _draw_levels(ax, normalize(run.result.map(target), normalization))
            _marks(ax, runs, row, target, diffs, size)
            # contours must not widen the view beyond the image
            ax.set_xlim(-0.5, size[1] - 0.5)
            ax.set_ylim(size[0] - 0.5, -0.5)
            _caption(ax, run.result.metrics_of(target), style)
            if row == 0:
                ax.set_title(_wrap(titles[col]), fontsize=9)
            if col == 0:
                ax.set_ylabel(_row_label(run), fontsize=8)
    _overlay_legend(fig, contours)
    _suptitle(fig, f'ERF contours ({normalization} normalisation)', style)
    return fig


def evolution_figure(runs, iterations: Sequence[int], target: str, normalization: str,
                     scale: str, style: Style = Style()) -> Figure:
    """Snapshots of one target in iteration order, then area ratio against iteration."""
    count = len(runs)
    cols = min(count, EVOLUTION_COLS)
    rows = -(-count // cols)
    grid_w, grid_h = grid_size_inches(rows, cols, style=style)
    grid_h += (rows - 1) * TITLE
    plot_w = max(grid_w - LEFT - RIGHT, PLOT_MIN_WIDTH)
    fig = _new_figure(PLOT_LEFT + plot_w + RIGHT, grid_h + PLOT_TOP + PLOT + PLOT_BOTTOM)
    shown = display_maps([run.result.map(target) for run in runs], normalization, scale)
    image = None
    for k, (run, data) in enumerate(zip(runs, shown)):
        row, col = divmod(k, cols)
        ax = _panel(fig, row, col, style, titled=True)
        image = ax.imshow(data, cmap=style.cmap, vmin=0.0, vmax=1.0)
        ax.set_title(run.label, fontsize=9)
        _caption(ax, run.result.metrics_of(target), style)
    _colour_bar(fig, image, rows, cols, _scale_label(normalization, scale), style)
    size = 'x'.join(str(s) for s in runs[0].result.input_size)
    _suptitle(fig, f'ERF of {target} over training ({runs[0].result.model_name or "model"}, '
                   f'{size}, {normalization} normalisation, {scale} scale)', style)
    ax = _axes(fig, PLOT_LEFT, grid_h + PLOT_TOP, plot_w, PLOT)
    _area_curves(ax, runs, iterations, target)
    return fig


def _percent_tick(value: float, _position=None) -> str:
    """A log axis' tick as a percentage, 2 significant digits, no exponent."""
    if not value > 0:
        return ''
    text = np.format_float_positional(100.0 * value, precision=2, unique=False,
                                      fractional=False, trim='-')
    return f'{text} %'


def _minor_percent_tick(value: float, position=None) -> str:
    # only 2x and 5x a power of ten: every minor tick labelled collides within a decade
    mantissa = value / 10 ** np.floor(np.log10(value)) if value > 0 else 0
    return _percent_tick(value) if round(mantissa) in (2, 5) else ''


def _area_curves(ax, runs, iterations: Sequence[int], target: str) -> None:
    plotted = []
    for threshold, colour in THRESHOLD_COLOURS.items():
        values = [run.result.metrics_of(target)['area_ratio'].get(threshold) for run in runs]
        # None (no square held that share) is a gap in the line, not a zero
        ys = np.array([np.nan if v is None else v for v in values], dtype=float)
        ax.plot(iterations, ys, marker='o', color=colour, label=f'area@{threshold}')
        plotted.extend(ys[np.isfinite(ys)])
    # ratios span orders of magnitude (a 20 % square is tiny next to a 99 % one)
    if plotted:
        ax.set_yscale('log')
        # percent, not 2x10^-1: the same unit as the panels' metric lines
        ax.yaxis.set_major_formatter(FuncFormatter(_percent_tick))
        ax.yaxis.set_minor_formatter(FuncFormatter(_minor_percent_tick))
    span = max(iterations) - min(iterations)
    gaps = np.diff(sorted(iterations))
    # every iteration as a tick where the labels do not collide; matplotlib's ticks otherwise
    if len(iterations) <= 8 and (span == 0 or gaps.min() > 0.06 * span):
        ax.set_xticks(list(iterations))
    ax.set_xlabel('iteration', fontsize=8)
    ax.set_ylabel('area ratio (% of the input)', fontsize=8)
    ax.set_title(f'high-contribution area ratio of {target}', fontsize=9)
    ax.tick_params(which='both', labelsize=7)
    ax.grid(alpha=0.3)
    # beside the plot, in the colour bar's margin: inside, 'best' still covered points
    ax.legend(fontsize=6.5, loc='upper left', bbox_to_anchor=(1.01, 1.0), borderaxespad=0,
              handlelength=1.5, frameon=False)
