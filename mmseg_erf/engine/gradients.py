"""Per-image ERF maps: one forward, one backward per target."""
from contextlib import nullcontext
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from .points import response_index
from .targets import LOGIT_TARGETS, TargetError


class ClassRangeError(ValueError):
    """A response class at or beyond the channels of a logit target."""

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


def response_maps(features: Mapping[str, torch.Tensor], inputs: torch.Tensor,
                  rows: Sequence[int], cells: Callable[[int, Tuple[int, int]], Tuple[int, int]],
                  classes: Sequence[int], windowed: Optional[bool] = None,
                  retain_graph: bool = False,
                  supports: Optional[Dict[str, torch.Tensor]] = None
                  ) -> Dict[str, torch.Tensor]:
    """Maps ``relu(d relu(F[row, :, y, x]).sum() / d inputs[row]).sum(channels)`` of one
    response point per listed image, all in one backward per target.

    This is the one gradient of the package: the classic centre ERF is the case of
    one point per image at the centre cell.

    Args:
        features: ``{name: (B, C, h, w)}`` computed from ``inputs`` in one forward.
        inputs: the (B, 3, H, W) tensor the model consumed, with ``requires_grad``.
        rows: the batch rows that respond (each image at most once: a sum of
            responses at two points of one image would mix their gradients).
        cells: ``cells(i, (h, w))`` is the feature cell (y, x) of ``rows[i]``'s point
            on a target of size (h, w).
        classes: per row, the logit channel for logit targets (``decode_head``,
            ``seg_logits``, ``auxiliary_head``), -1 for every channel; other
            targets always use every channel.
        windowed: compute convolution input gradients only where the output
            gradient is not zero (:class:`WindowedConvGrads`; the same maps up to
            float rounding). None (default): for targets of a neck or head, whose
            high-resolution convolutions next to the response point see a small
            window; backbone targets gain little there and would pay the mode's
            per-operator cost.
        retain_graph: keep the graph after the last target (more points follow).
        supports: a dict to fill with ``{name: (len(rows), H, W) bool}``, where any
            channel's raw gradient is non-zero (the theoretical field, :mod:`.trf`).

    Returns:
        ``{name: (len(rows), H, W) float64 on the CPU}``. Images are independent only
        when the model is in eval mode (BatchNorm on running statistics): callers
        check that.

    Raises:
        ClassRangeError: a class at or beyond a logit target's channels.
        TargetError: a target that does not depend on the input.
    """
    rows = list(rows)
    rows_t = torch.as_tensor(rows, dtype=torch.long, device=inputs.device)
    names = list(features)
    maps: Dict[str, torch.Tensor] = {}
    for n, name in enumerate(names):
        feat = features[name]
        at = [cells(i, tuple(feat.shape[-2:])) for i in range(len(rows))]
        fy = torch.as_tensor([y for y, _ in at], dtype=torch.long, device=feat.device)
        fx = torch.as_tensor([x for _, x in at], dtype=torch.long, device=feat.device)
        response = feat[rows_t.to(feat.device), :, fy, fx]  # (P, C)
        if name in LOGIT_TARGETS and any(c >= 0 for c in classes):
            channels = response.shape[1]
            if any(c >= channels for c in classes):
                raise ClassRangeError(
                    f'class {max(classes)} is out of range for target {name!r} with '
                    f'{channels} classes (0-{channels - 1}); name a class below '
                    f'{channels}, or give labels whose values the head predicts '
                    f'(ignore pixels as 255)')
            if any(c < 0 for c in classes):
                raise ClassRangeError(f'a point without a class among points with one on '
                                      f'target {name!r}; give every point a class or none')
            index = torch.as_tensor(list(classes), device=feat.device)[:, None]
            response = response.gather(1, index)
        score = F.relu(response).sum()
        if not score.requires_grad:
            raise TargetError(f'target {name!r} does not depend on the input')
        window = windowed if windowed is not None else windowed_by_default(name)
        with WindowedConvGrads() if window else nullcontext():
            (grad, ) = torch.autograd.grad(score, inputs,
                                           retain_graph=retain_graph or n < len(names) - 1,
                                           allow_unused=True)
        if grad is None:
            raise TargetError(f'target {name!r} does not depend on the input')
        maps[name] = F.relu(grad[rows_t]).to(torch.float64).sum(dim=1).cpu()
        if supports is not None:
            supports[name] = grad[rows_t].ne(0).any(dim=1).cpu()
    return maps


def input_gradient_maps(features: Mapping[str, torch.Tensor], inputs: torch.Tensor,
                        point: Sequence[float] = (0.5, 0.5),
                        class_index: Optional[int] = None,
                        windowed: Optional[bool] = None) -> Dict[str, torch.Tensor]:
    """:func:`response_maps` of every image of the batch at one relative point (y, x)
    of each target (default the centre), on one class of logit targets or all.

    Returns:
        ``{name: (B, H, W) float64 on the CPU}``.
    """
    batch = inputs.shape[0]
    return response_maps(features, inputs, range(batch),
                         lambda _i, hw: response_index(hw[0], hw[1], point),
                         [-1 if class_index is None else class_index] * batch, windowed)
