"""Fixed input geometry: maps can only be averaged at one input size.

Images and label maps go through the same short-side resize and centre crop;
:func:`square_geometry` is the one place that computes it, so a label can never
land a pixel away from its image.
"""
from typing import Tuple

import torch
import torch.nn.functional as F


def square_geometry(h: int, w: int, size: int) -> Tuple[int, int, int, int]:
    """Sides after resizing the short side of an ``h x w`` image to ``size``, and the
    top-left corner of the centred ``size x size`` crop.

    torchvision's ``Resize(size)`` + ``CenterCrop(size)``: the long side is
    ``int(size * long / short)`` (truncated, not rounded) and each crop offset is
    ``int(round((new - size) / 2))`` (halves round to even).

    Returns:
        tuple: ``(new_h, new_w, top, left)``.
    """
    if size <= 0:
        raise ValueError(f'input size must be positive, got {size}')
    if h <= 0 or w <= 0:
        raise ValueError(f'cannot fit an empty {h} x {w} image; pass an image with pixels')
    if h <= w:
        new_h, new_w = size, max(size, int(size * w / h))
    else:
        new_h, new_w = max(size, int(size * h / w)), size
    return new_h, new_w, int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))


def fit_square(image: torch.Tensor, size: int) -> torch.Tensor:
    """Resize the short side to ``size`` and centre-crop ``size x size``.

    This is the geometry of VMamba's ``analyze/erf.py`` (torchvision
    ``Resize(size)`` + ``CenterCrop(size)`` on a PIL image), done on tensors:
    bicubic with antialiasing, and, for 8-bit input, values rounded and
    clamped to [0, 255] as PIL's uint8 output would be. An image already
    ``size x size`` is returned unchanged (as float).

    Args:
        image (Tensor): (C, H, W) or (B, C, H, W), any real dtype.
        size (int): side of the output square.

    Returns:
        Tensor: float32 (or the input's floating dtype) of spatial size
        ``size x size``.
    """
    if image.dim() not in (3, 4):
        raise ValueError(f'expected a (C, H, W) or (B, C, H, W) image, got shape '
                         f'{tuple(image.shape)}')
    h, w = image.shape[-2:]
    new_h, new_w, top, left = square_geometry(h, w, size)
    is_8bit = image.dtype == torch.uint8
    out = image if image.is_floating_point() else image.float()
    if (new_h, new_w) != (h, w):
        batched = out.unsqueeze(0) if out.dim() == 3 else out
        batched = F.interpolate(batched, size=(new_h, new_w), mode='bicubic',
                                align_corners=False, antialias=True)
        if is_8bit:
            batched = batched.round().clamp(0, 255)
        out = batched[0] if image.dim() == 3 else batched
    return out[..., top:top + size, left:left + size]


def fit_label_square(label: torch.Tensor, size: int) -> torch.Tensor:
    """:func:`fit_square`'s geometry for a label map (H, W): nearest neighbours, the
    same new sides and centre crop, so labels stay on their image pixels."""
    h, w = label.shape[-2:]
    new_h, new_w, top, left = square_geometry(h, w, size)
    out = label
    if (new_h, new_w) != (h, w):
        # float32 holds every label id below 2**24 exactly
        out = F.interpolate(label[None, None].float(), size=(new_h, new_w),
                            mode='nearest')[0, 0].to(label.dtype)
    return out[top:top + size, left:left + size]
