"""Per-image ERF maps: one forward, one backward per target."""
from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from .targets import LOGIT_TARGETS, TargetError


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
                        class_index: Optional[int] = None) -> Dict[str, torch.Tensor]:
    """Per-image maps ``relu(d relu(F[:, :, y, x]).sum() / d inputs).sum(channels)``.

    Args:
        features: ``{name: (B, C, h, w)}`` computed from ``inputs`` in one forward.
        inputs: the (B, 3, H, W) tensor the model consumed, with ``requires_grad``.
        point: relative response position (y, x); default the centre.
        class_index: restrict logit targets (``decode_head``, ``seg_logits``,
            ``auxiliary_head``) to one class channel; other targets use all channels.

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
        (grad, ) = torch.autograd.grad(score, inputs, retain_graph=k < len(names) - 1,
                                       allow_unused=True)
        if grad is None:
            raise TargetError(f'target {name!r} does not depend on the input')
        maps[name] = F.relu(grad).to(torch.float64).sum(dim=1).cpu()
    return maps
