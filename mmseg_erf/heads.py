"""How mmseg's decode heads predict: one small adapter per head kind, all in ``HEAD_KINDS``.

The ERF engine asks a head runner for two maps of a segmentor's decode head
(see :data:`mmseg_erf.engine.targets.HeadRunner`):

- ``seg_logits``: exactly what the segmentor's ``encode_decode`` returns. The
  runner calls the head's own ``predict`` (a cascade: the earlier stages'
  ``forward``, then the last stage's ``predict``), so every head's inference
  path is the one mmseg runs: the first element of DANet's and EncNet's tuple
  outputs, the last stage of KNet's iterative head, PointRend's subdivision,
  MaskFormer's and Mask2Former's per-pixel class scores from masks and queries.
- ``decode_head``: the map before the final resize. While ``predict`` runs, the
  runner records what the head hands to ``predict_by_feat`` (the logits it
  resizes) or what its ``forward`` returns; the head kind turns that record
  into a (B, classes, h, w) map.

Heads that draw random numbers at inference (SegNeXt's ``LightHamHead``: new NMF
bases on every forward) run image by image, each under a seed of its own from
its dataset position: the same maps on every rerun, at any batch size and
process count. Their ERF is an average over that randomness too.
"""
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

# base of the per-image seeds of random heads (image at position p: SEED_BASE + p)
SEED_BASE = 0


def _class_scores(cls_logits: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """Per-pixel class scores of a mask-classification head at its mask resolution:
    the same combination its ``predict`` makes after upsampling the masks (softmax
    over classes without the "no object" class, sigmoid masks, sum over queries)."""
    return torch.einsum('bqc,bqhw->bchw', F.softmax(cls_logits, dim=-1)[..., :-1],
                        mask_logits.sigmoid())


@dataclass(frozen=True)
class HeadKind:
    """One kind of decode head.

    Args:
        name: what it is, for messages and the docs.
        classes: mmseg class names of the heads of this kind (empty: every head).
        recorded: the head method whose result (``'forward'``) or first argument
            (``'predict_by_feat'``) is recorded while ``predict`` runs.
        decode_map: that record -> the ``decode_head`` map.
        random: the head draws random numbers at inference (seeded per image).
    """
    name: str
    classes: Tuple[str, ...]
    recorded: str
    decode_map: Callable[[Any], torch.Tensor]
    random: bool = False

    def matches(self, head: nn.Module) -> bool:
        return not self.classes or any(c.__name__ in self.classes
                                       for c in type(head).__mro__)


HEAD_KINDS: Tuple[HeadKind, ...] = (
    HeadKind('mask classification (MaskFormer, Mask2Former): per-pixel class scores at '
             'the mask resolution', ('MaskFormerHead', 'Mask2FormerHead'), 'forward',
             lambda out: _class_scores(out[0][-1], out[1][-1])),
    HeadKind('random NMF bases (SegNeXt LightHamHead): logits before the resize',
             ('LightHamHead', ), 'predict_by_feat', lambda logits: logits, random=True),
    HeadKind('logits before predict_by_feat resizes them (every other head: tuple outputs '
             'give their first element, KNet its last stage, PointRend its subdivided '
             'logits)', (), 'predict_by_feat', lambda logits: logits),
)


def head_kind(head: nn.Module) -> HeadKind:
    """The first kind in :data:`HEAD_KINDS` that matches ``head``."""
    kind = next(k for k in HEAD_KINDS if k.matches(head))
    # a LightHamHead built with rand_init=False keeps fixed bases
    ham = getattr(getattr(head, 'hamburger', None), 'ham', None)
    if kind.random and ham is not None and not getattr(ham, 'rand_init', True):
        return HEAD_KINDS[-1]
    return kind


@contextmanager
def _recording(head: nn.Module, method: str, record: List) -> Iterator[None]:
    """Record calls of ``head.<method>`` (its first argument for ``predict_by_feat``,
    its result for ``forward``) without changing what it does."""
    original = getattr(head, method)

    def recorded(*args, **kwargs):
        result = original(*args, **kwargs)
        record.append(args[0] if method == 'predict_by_feat' else result)
        return result

    setattr(head, method, recorded)
    try:
        yield
    finally:
        delattr(head, method)  # back to the class's method


def image_metas(input_hw: Tuple[int, int], batch: int) -> List[dict]:
    """The image metas mmseg's ``EncoderDecoder.predict`` makes for inputs without
    data samples: the whole S x S input, no padding."""
    return [dict(ori_shape=input_hw, img_shape=input_hw, pad_shape=input_hw,
                 padding_size=[0, 0, 0, 0]) for _ in range(batch)]


def _stages(model: nn.Module) -> List[nn.Module]:
    head = model.decode_head
    return list(head) if isinstance(head, nn.ModuleList) else [head]


def _predict(model: nn.Module, feats, input_hw) -> Tuple[torch.Tensor, torch.Tensor]:
    """(decode_head map, seg_logits) of one forward of the head(s) on ``feats``."""
    stages = _stages(model)
    last, kind = stages[-1], head_kind(stages[-1])
    metas = image_metas(input_hw, _batch_size(feats))
    record: List = []
    with _recording(last, kind.recorded, record):
        if len(stages) == 1:
            seg_logits = last.predict(feats, metas, model.test_cfg)
        else:  # CascadeEncoderDecoder.encode_decode
            out = stages[0].forward(feats)
            for stage in stages[1:-1]:
                out = stage.forward(feats, out)
            seg_logits = last.predict(feats, out, metas, model.test_cfg)
    if len(record) != 1:
        raise RuntimeError(f'{type(last).__name__}.predict called {kind.recorded} '
                           f'{len(record)} times; mmseg_erf.heads needs an adapter for it')
    return kind.decode_map(record[0]), seg_logits


def _batch_size(feats) -> int:
    """Images in a nest of feature tensors (DPT's ViT gives [map, class token] per stage)."""
    return feats.shape[0] if isinstance(feats, torch.Tensor) else _batch_size(feats[0])


def _image(feats, i: int):
    if isinstance(feats, torch.Tensor):
        return feats[i:i + 1]
    return type(feats)(_image(f, i) for f in feats)


def run_decode_head(model: nn.Module, feats, input_hw: Tuple[int, int],
                    positions: Optional[Sequence[int]] = None
                    ) -> Tuple[torch.Tensor, torch.Tensor]:
    """The head runner of mmseg segmentors (``EncoderDecoder``,
    ``CascadeEncoderDecoder``): ``(decode_head map, seg_logits)``.

    Args:
        model: the segmentor.
        feats: what its ``extract_feat`` returned (backbone, then neck).
        input_hw: the input's (H, W).
        positions: each image's dataset position; seeds of random heads
            (default 0, 1, ...).
    """
    if not any(head_kind(s).random for s in _stages(model)):
        return _predict(model, feats, input_hw)
    positions = list(range(_batch_size(feats))) if positions is None else list(positions)
    maps, logits = [], []
    for i, position in enumerate(positions):
        with torch.random.fork_rng(devices=[]):
            # the CPU generator: NMF2D draws its bases there, whatever the device
            torch.default_generator.manual_seed(image_seed(position))
            decode_map, seg_logits = _predict(model, _image(feats, i), input_hw)
        maps.append(decode_map)
        logits.append(seg_logits)
    return torch.cat(maps), torch.cat(logits)


def image_seed(position: int) -> int:
    """The seed a random head runs under for the image at dataset ``position``."""
    return SEED_BASE + int(position)


def head_runner_for(model: nn.Module):
    """:func:`run_decode_head` for mmseg ``EncoderDecoder`` segmentors (cascades
    included), None (the engine's plain runner) for any other model.

    SAN's ``MultimodalEncoderDecoder`` is not one: it has an image and a text encoder
    instead of a backbone, and its head reads the input image too, so the engine
    (backbone, neck, then a head runner on their features) refuses its ``all``,
    ``decode_head`` and ``seg_logits`` targets in one sentence; no head kind is kept
    for its ``SideAdapterCLIPHead``.
    """
    from mmseg.models.segmentors import EncoderDecoder
    return run_decode_head if isinstance(model, EncoderDecoder) else None
