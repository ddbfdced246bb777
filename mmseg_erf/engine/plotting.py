"""Heatmaps of ERF maps (matplotlib, Agg canvas; no pyplot global state)."""
from typing import Optional

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .metrics import replknet_normalize, vmamba_normalize

NORMALIZATIONS = {'replknet': replknet_normalize, 'vmamba': vmamba_normalize}
CMAP = 'RdYlGn'  # the colour map of RepLKNet's and VMamba's published figures


def normalize(erf_map: np.ndarray, how: str = 'replknet') -> np.ndarray:
    """Display normalisation by name: 'replknet' (log10(x+1)/max) or 'vmamba' (x**0.2/max)."""
    if how not in NORMALIZATIONS:
        raise ValueError(f'unknown normalization {how!r}; choose one of '
                         f'{sorted(NORMALIZATIONS)}')
    return NORMALIZATIONS[how](erf_map)


def render_heatmap(erf_map: np.ndarray, title: str = '', normalization: str = 'replknet',
                   size_inches: float = 5.0, dpi: int = 100) -> np.ndarray:
    """The normalised map as an RGB uint8 image (H, W, 3) with a colour bar and title."""
    data = normalize(erf_map, normalization)
    fig = Figure(figsize=(size_inches * 1.15, size_inches), dpi=dpi)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(data, cmap=CMAP, vmin=0.0, vmax=1.0, interpolation='nearest')
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_heatmap(erf_map: np.ndarray, path: str, title: str = '',
                 normalization: str = 'replknet', rgb: Optional[np.ndarray] = None) -> None:
    """Write the heatmap PNG (``rgb`` reuses an already rendered image)."""
    from matplotlib.image import imsave
    imsave(path, rgb if rgb is not None else render_heatmap(erf_map, title, normalization))
