"""Fixed input geometry: maps can only be averaged at one input size."""
import torch
import torch.nn.functional as F


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
    if size <= 0:
        raise ValueError(f'input size must be positive, got {size}')
    if image.dim() not in (3, 4):
        raise ValueError(f'expected a (C, H, W) or (B, C, H, W) image, got shape '
                         f'{tuple(image.shape)}')
    is_8bit = image.dtype == torch.uint8
    out = image if image.is_floating_point() else image.float()
    h, w = out.shape[-2:]
    if (h, w) == (size, size):
        return out
    batched = out.unsqueeze(0) if out.dim() == 3 else out
    # torchvision's rule: the long side is truncated, not rounded
    if h <= w:
        new_h, new_w = size, max(size, int(size * w / h))
    else:
        new_h, new_w = max(size, int(size * h / w)), size
    if (new_h, new_w) != (h, w):
        batched = F.interpolate(batched, size=(new_h, new_w), mode='bicubic',
                                align_corners=False, antialias=True)
        if is_8bit:
            batched = batched.round().clamp(0, 255)
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    batched = batched[..., top:top + size, left:left + size]
    return batched[0] if image.dim() == 3 else batched


def fit_label_square(label: torch.Tensor, size: int) -> torch.Tensor:
    """:func:`fit_square`'s geometry for a label map (H, W): nearest neighbours, the
    same new sides and centre crop, so labels stay on their image pixels."""
    h, w = label.shape[-2:]
    if (h, w) == (size, size):
        return label
    if h <= w:
        new_h, new_w = size, max(size, int(size * w / h))
    else:
        new_h, new_w = max(size, int(size * h / w)), size
    out = label
    if (new_h, new_w) != (h, w):
        out = F.interpolate(label[None, None].float(), size=(new_h, new_w),
                            mode='nearest')[0, 0].to(label.dtype)
    top = int(round((new_h - size) / 2.0))
    left = int(round((new_w - size) / 2.0))
    return out[top:top + size, left:left + size]
