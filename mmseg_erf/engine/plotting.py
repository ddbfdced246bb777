"""Heatmaps of ERF maps (matplotlib, Agg canvas; no pyplot global state), and the
number formats every figure shares (area ratios in percent, radii in pixels)."""
from typing import Dict, Optional

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .metrics import normalized_metrics, replknet_normalize, vmamba_normalize
from .trf_plot import draw_trf_outline

NORMALIZATIONS = {'replknet': replknet_normalize, 'vmamba': vmamba_normalize}
CMAP = 'RdYlGn'  # the colour map of RepLKNet's and VMamba's published figures
# the papers' map first; cividis and viridis read the same to colour-blind readers
# and in greyscale print, which red-to-green does not
CMAPS = ('RdYlGn', 'cividis', 'viridis')
SCALE_NAMES = {'replknet': 'log10(x+1)', 'vmamba': 'x^0.2'}


def normalize(erf_map: np.ndarray, how: str = 'replknet') -> np.ndarray:
    """Display normalisation by name: 'replknet' (log10(x+1)/max) or 'vmamba' (x**0.2/max)."""
    if how not in NORMALIZATIONS:
        raise ValueError(f'unknown normalization {how!r}; choose one of '
                         f'{sorted(NORMALIZATIONS)}')
    return NORMALIZATIONS[how](erf_map)


def check_cmap(cmap: str) -> str:
    if cmap not in CMAPS:
        raise ValueError(f'colour map {cmap!r} is not offered; choose one of {", ".join(CMAPS)}')
    return cmap


def percent(ratio: Optional[float]) -> str:
    """An area ratio as a percentage with 3 significant digits and no exponent
    (``0.0213 %``, ``2.53 %``, ``95.4 %``); ``-`` when no square held that share."""
    if ratio is None:
        return '-'
    # '#' keeps significant trailing zeros (18.0, 0.0170); a bare point goes
    text = f'{100.0 * ratio:#.3g}'
    if 'e' in text:  # below 0.0001 %: positional all the same
        text = np.format_float_positional(100.0 * ratio, precision=3, unique=False,
                                          fractional=False)
    return f'{text.rstrip(".")} %'


def pixels(value: Optional[float]) -> str:
    return '-' if value is None else f'{value:.1f} px'


def metrics_line(metrics: Dict) -> str:
    """Two lines under a panel: the 50 % and 99 % area ratios and the effective radius,
    the radius with its 95 % interval where the run has one (``ci95``)."""
    areas = metrics.get('area_ratio') or {}
    radius = pixels(metrics.get('effective_radius'))
    low, high = ((metrics.get('ci95') or {}).get('effective_radius') or (None, None))
    if low is not None and high is not None:
        radius += f' [{low:.1f}, {high:.1f}]'
    return (f'area@0.5 {percent(areas.get("0.5"))}  @0.99 {percent(areas.get("0.99"))}\n'
            f'eff. radius {radius}')


def scale_label(normalization: str, over: str = 'max') -> str:
    """The colour bar's label: what the colours are."""
    return f'{SCALE_NAMES[normalization]} / {over}'


def heatmap_figure(erf_map: np.ndarray, title: str = '', normalization: str = 'replknet',
                   size_inches: float = 5.0, dpi: int = 100, cmap: str = CMAP,
                   metrics: Optional[Dict] = None) -> Figure:
    """The normalised map with a title, a colour bar, and the map's area ratios and
    effective radius below it (RepLKNet's numbers: the map is the image frame, as in a
    classic run). ``metrics`` (the run's, with ``ci95`` and ``trf``): the caption shows
    them with the radius's interval and the TRF is outlined; without, the caption's
    numbers are computed from the map."""
    data = normalize(erf_map, normalization)
    fig = Figure(figsize=(size_inches * 1.15, size_inches), dpi=dpi, layout='constrained')
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(data, cmap=check_cmap(cmap), vmin=0.0, vmax=1.0,
                      interpolation='nearest')
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    if metrics is None:
        values = np.where(np.isfinite(erf_map), erf_map, 0.0)
        metrics = normalized_metrics(replknet_normalize(values))
    draw_trf_outline(ax, metrics.get('trf'), data.shape)
    ax.set_xlabel(metrics_line(metrics), fontsize=8)
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label(scale_label(normalization), fontsize=8)
    bar.ax.tick_params(labelsize=8)
    return fig


def render_heatmap(erf_map: np.ndarray, title: str = '', normalization: str = 'replknet',
                   size_inches: float = 5.0, dpi: int = 100, cmap: str = CMAP,
                   metrics: Optional[Dict] = None) -> np.ndarray:
    """:func:`heatmap_figure` as an RGB uint8 image (H, W, 3)."""
    fig = heatmap_figure(erf_map, title, normalization, size_inches, dpi, cmap, metrics)
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def save_heatmap(erf_map: np.ndarray, path: str, title: str = '',
                 normalization: str = 'replknet', rgb: Optional[np.ndarray] = None) -> None:
    """Write the heatmap PNG (``rgb`` reuses an already rendered image)."""
    from matplotlib.image import imsave
    imsave(path, rgb if rgb is not None else render_heatmap(erf_map, title, normalization))
