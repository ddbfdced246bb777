"""Per-image ERF maps: one forward, one backward per target."""
from contextlib import nullcontext
from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from .targets import LOGIT_TARGETS, TargetError

_CONV_BACKWARD = torch.ops.aten.convolution_backward.default
# targets whose backward starts in high-resolution convolutions (see input_gradient_maps)
_WINDOWED_STAGES = ('neck', 'decode_head', 'seg_logits', 'auxiliary_head')


def _windowed_conv_input_grad(grad_out, inp, weight, _bias_sizes, stride, padding, dilation,
                              transposed, _output_padding, groups, output_mask,
                              max_fraction: float = 0.25):
    """The input gradient of a 2-d convolution from the window of ``grad_out`` that is
    not zero, image by image, or None (the caller then runs the dense backward).

    The gradient of one response point starts as one pixel and stays a small
    window through the layers next to it (UperNet's 3x3 ``fpn_bottleneck`` on
    2048 channels at 1/4 of the input: over half of the head's work, spent on
    zeros). The transposed convolution of the window, placed at its offset, is
    the dense result up to float summation order: every product left out is 0.
    Each image is done alone, so an image's map does not depend on the batch.
    """
    if transposed or grad_out.dim() != 4 or list(output_mask) != [True, False, False]:
        return None
    h_out, w_out = grad_out.shape[-2:]
    if h_out * w_out < 64:
        return None
    nonzero = grad_out.ne(0).any(dim=1)  # (B, h, w); NaN and inf count as non-zero
    rows, cols = nonzero.any(dim=2), nonzero.any(dim=1)
    windows = []
    for i in range(grad_out.shape[0]):
        r, c = rows[i].nonzero(), cols[i].nonzero()
        if r.numel() == 0:
            windows.append(None)  # an all-zero gradient: its input gradient is zero
            continue
        r0, r1, c0, c1 = int(r[0]), int(r[-1]), int(c[0]), int(c[-1])
        if (r1 - r0 + 1) * (c1 - c0 + 1) > max_fraction * h_out * w_out:
            return None
        windows.append((r0, r1, c0, c1))
    grad_in = torch.zeros_like(inp)
    for i, window in enumerate(windows):
        if window is None:
            continue
        r0, r1, c0, c1 = window
        with torch.autocast(grad_out.device.type, enabled=False):
            part = F.conv_transpose2d(grad_out[i:i + 1, :, r0:r1 + 1, c0:c1 + 1], weight,
                                      stride=stride, dilation=dilation, groups=groups)
        top, left = r0 * stride[0] - padding[0], c0 * stride[1] - padding[1]
        y0, x0 = max(top, 0), max(left, 0)
        y1 = min(top + part.shape[-2], inp.shape[-2])
        x1 = min(left + part.shape[-1], inp.shape[-1])
        grad_in[i, :, y0:y1, x0:x1] = part[0, :, y0 - top:y1 - top, x0 - left:x1 - left]
    return grad_in, None, None


class WindowedConvGrads(TorchDispatchMode):
    """Inside this mode, backward passes compute input gradients of 2-d convolutions
    on the window where the output gradient is not zero (see
    :func:`_windowed_conv_input_grad`); everything else runs unchanged."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # nothing is compiled in here: spares the seconds-long import of torch._dynamo
        # that torch's default wrapper of __torch_dispatch__ does on first use
        return False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is _CONV_BACKWARD and not kwargs:
            out = _windowed_conv_input_grad(*args)
            if out is not None:
                return out
        return func(*args, **(kwargs or {}))


def windowed_by_default(name: str) -> bool:
    """Whether :func:`input_gradient_maps` windows a target's convolution gradients
    unless told: neck and head targets, not backbone ones."""
    return name.split('.')[0] in _WINDOWED_STAGES


def response_index(h: int, w: int, point: Sequence[float] = (0.5, 0.5)) -> Tuple[int, int]:
    """Feature-map position of a relative response point (y, x) in [0, 1).

    The default (0.5, 0.5) gives ``(h // 2, w // 2)``, the centre used by
    RepLKNet and VMamba.
    """
    ry, rx = point
    if not (0 <= ry < 1 and 0 <= rx < 1):
        raise ValueError(f'response point {tuple(point)} must be relative (y, x) in [0, 1)')
    return min(int(ry * h), h - 1), min(int(rx * w), w - 1)


def input_gradient_maps(features: Mapping[str, torch.Tensor], inputs: torch.Tensor,
                        point: Sequence[float] = (0.5, 0.5),
                        class_index: Optional[int] = None,
                        windowed: Optional[bool] = None) -> Dict[str, torch.Tensor]:
    """Per-image maps ``relu(d relu(F[:, :, y, x]).sum() / d inputs).sum(channels)``.

    Args:
        features: ``{name: (B, C, h, w)}`` computed from ``inputs`` in one forward.
        inputs: the (B, 3, H, W) tensor the model consumed, with ``requires_grad``.
        point: relative response position (y, x); default the centre.
        class_index: restrict logit targets (``decode_head``, ``seg_logits``,
            ``auxiliary_head``) to one class channel; other targets use all channels.
        windowed: compute convolution input gradients only where the output
            gradient is not zero (:class:`WindowedConvGrads`; the same maps up to
            float rounding). None (default): for targets of a neck or head, whose
            high-resolution convolutions next to the response point see a small
            window; backbone targets gain little there and would pay the mode's
            per-operator cost.

    Returns:
        ``{name: (B, H, W) float64 on the CPU}``. The graph is kept between targets
        and released after the last one. Images are independent only when the model
        is in eval mode (BatchNorm on running statistics): callers check that.
    """
    names = list(features)
    maps: Dict[str, torch.Tensor] = {}
    for k, name in enumerate(names):
        feat = features[name]
        y, x = response_index(feat.shape[2], feat.shape[3], point)
        response = feat[:, :, y, x]
        if class_index is not None and name in LOGIT_TARGETS:
            if not 0 <= class_index < response.shape[1]:
                raise ValueError(f'class index {class_index} is out of range for target '
                                 f'{name!r} with {response.shape[1]} classes')
            response = response[:, class_index:class_index + 1]
        score = F.relu(response).sum()
        if not score.requires_grad:
            raise TargetError(f'target {name!r} does not depend on the input')
        window = windowed if windowed is not None else windowed_by_default(name)
        with WindowedConvGrads() if window else nullcontext():
            (grad, ) = torch.autograd.grad(score, inputs, retain_graph=k < len(names) - 1,
                                           allow_unused=True)
        if grad is None:
            raise TargetError(f'target {name!r} does not depend on the input')
        maps[name] = F.relu(grad).to(torch.float64).sum(dim=1).cpu()
    return maps
