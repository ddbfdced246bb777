"""Target names -> feature maps captured during one (truncated) forward pass.

Names understood on a segmentor (anything with ``backbone`` and ``decode_head``):

- ``backbone.i``: the i-th element of the backbone's output tuple (negative i
  counts from the end, so ``backbone.-1`` is the last stage);
- ``neck.i``: the i-th element of the neck's output;
- ``decode_head``: decode-head logits before resizing;
- ``seg_logits``: those logits resized to the input, as the segmentor predicts;
- ``auxiliary_head``: auxiliary-head logits (segmentors that have one);
- ``all``: every backbone output, every neck level and ``decode_head``;
- any other dotted module path (``backbone.stages.2.blocks.1``): that module's
  output, captured by a forward hook.

On any other ``nn.Module``, ``output`` is the model's output and module paths work
as above. The forward stops as soon as every requested tensor exists: asking only
for backbone targets never runs the decode head.
"""
import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

STAGES = ('backbone', 'neck', 'decode_head', 'auxiliary_head')
LOGIT_TARGETS = ('decode_head', 'seg_logits', 'auxiliary_head')


HeadRunner = Callable[[nn.Module, Any, Tuple[int, int], Optional[Sequence[int]]],
                      Tuple[torch.Tensor, torch.Tensor]]
"""``runner(segmentor, feats, input_hw, positions) -> (decode_head map, seg_logits)``:
how a segmentor's decode head turns the backbone/neck features into its logits
before the final resize and into its prediction at the input size. ``positions``
are the images' dataset positions (None when unknown), for heads that draw random
numbers. The framework layer supplies one that runs the head's own prediction
path (``mmseg_erf.heads.run_decode_head``); :func:`plain_head_runner` is the
framework-free default."""


class TargetError(ValueError):
    """A target name that the model does not have."""


class _AllCaptured(Exception):
    """Raised from a forward hook to stop the forward once nothing else is needed."""


def is_segmentor(model: nn.Module) -> bool:
    return hasattr(model, 'backbone') and hasattr(model, 'decode_head')


def _output_count(module: Optional[nn.Module], stage: str) -> Optional[int]:
    """Outputs a backbone/neck declares before running (None when it does not say)."""
    if stage == 'backbone':
        indices = getattr(module, 'out_indices', None)
        return len(indices) if isinstance(indices, (list, tuple)) else None
    num_outs = getattr(module, 'num_outs', None)
    if isinstance(num_outs, int):
        return num_outs
    channels = getattr(module, 'out_channels', None)
    return len(channels) if isinstance(channels, (list, tuple)) else None


def as_feature_map(value, name: str, input_hw: Tuple[int, int]) -> torch.Tensor:
    """Bring a captured output to (B, C, h, w).

    4-d tensors are taken as channels-first. Token tensors (B, L, C) are reshaped
    using a ``(h, w)`` found beside them in a tuple output (mmseg's Swin stages
    return ``(x, hw_shape, out, out_hw_shape)``), else a square grid when L is a
    perfect square (or L - 1, a leading class token being dropped) and the input
    is square.
    """
    hw = None
    if isinstance(value, (tuple, list)):
        tensors = [v for v in value if isinstance(v, torch.Tensor)]
        sizes = [v for v in value if isinstance(v, (tuple, list, torch.Size)) and len(v) == 2
                 and all(isinstance(s, int) for s in v)]
        if not tensors:
            raise TargetError(f'target {name!r} produced {type(value).__name__} with no '
                              f'tensor in it; choose a module that outputs a feature map')
        value, hw = tensors[0], (tuple(sizes[0]) if sizes else None)
    if not isinstance(value, torch.Tensor):
        raise TargetError(f'target {name!r} produced {type(value).__name__}, not a tensor; '
                          f'choose a module that outputs a feature map')
    if value.dim() == 4:
        return value
    if value.dim() == 3:
        b, length, c = value.shape
        if hw is not None and hw[0] * hw[1] == length:
            return value.transpose(1, 2).reshape(b, c, hw[0], hw[1])
        if input_hw[0] == input_hw[1]:
            for skip in (0, 1):
                side = math.isqrt(length - skip)
                if side * side == length - skip:
                    return value[:, skip:].transpose(1, 2).reshape(b, c, side, side)
        raise TargetError(
            f'target {name!r} outputs tokens of shape {tuple(value.shape)} whose spatial '
            f'size is unknown; use a square input size or target a module that returns '
            f'(B, C, h, w) or (tokens, (h, w))')
    raise TargetError(f'target {name!r} outputs a tensor of shape {tuple(value.shape)}; '
                      f'an ERF needs a (B, C, h, w) feature map or (B, L, C) tokens')


class FeatureTaps:
    """Capture named feature maps of ``model`` from one forward pass.

    Args:
        model (nn.Module): a built segmentor (mmseg ``EncoderDecoder`` or
            ``CascadeEncoderDecoder``) or any module.
        names (Sequence[str]): target names, see the module docstring.
        head_runner (HeadRunner, optional): computes ``decode_head`` and
            ``seg_logits`` from the features; default :func:`plain_head_runner`.

    Raises:
        TargetError: an unknown name; the message lists the valid ones.
    """

    def __init__(self, model: nn.Module, names: Sequence[str],
                 head_runner: Optional[HeadRunner] = None):
        if isinstance(names, str):
            names = [names]
        if not names:
            raise TargetError('no target given; ' + self._valid_help(model))
        self.model = model
        self.head_runner = head_runner or plain_head_runner
        self.segmentor = is_segmentor(model)
        self._requested = list(dict.fromkeys(names))
        for name in self._requested:
            self._check(name)
        self._resolved: Optional[List[str]] = None
        self._counts: Dict[str, int] = {}

    # ---- names ---------------------------------------------------------------------
    @property
    def names(self) -> List[str]:
        """Concrete target names; ``all`` and negative indices resolve on the first call."""
        return list(self._resolved) if self._resolved is not None else list(self._requested)

    def valid_names(self) -> List[str]:
        return self._valid_list(self.model)

    @staticmethod
    def _valid_list(model: nn.Module) -> List[str]:
        if not is_segmentor(model):
            return ['output', '<module path>']
        valid = []
        n_backbone = _output_count(model.backbone, 'backbone')
        valid += ([f'backbone.{i}' for i in range(n_backbone)] if n_backbone
                  else ['backbone.<i>'])
        if getattr(model, 'neck', None) is not None:
            n_neck = _output_count(model.neck, 'neck')
            valid += [f'neck.{i}' for i in range(n_neck)] if n_neck else ['neck.<i>']
        valid += ['decode_head', 'seg_logits']
        if getattr(model, 'auxiliary_head', None) is not None:
            valid.append('auxiliary_head')
        return valid + ['all', '<module path>']

    def _valid_help(self, model: nn.Module) -> str:
        children = ', '.join(n for n, _ in model.named_children()) or 'none'
        return (f'valid targets: {", ".join(self._valid_list(model))} '
                f'(module paths start with one of: {children})')

    def _check(self, name: str) -> None:
        model = self.model
        if name == 'output' and not self.segmentor:
            return
        if name in ('all', 'decode_head', 'seg_logits', 'auxiliary_head'):
            if not self.segmentor:
                raise TargetError(f'target {name!r} needs a segmentor; '
                                  f'{self._valid_help(model)}')
            aux = getattr(model, 'auxiliary_head', None)
            if name == 'auxiliary_head' and (aux is None or isinstance(aux, nn.ModuleList)):
                raise TargetError(
                    f'target {name!r} needs exactly one auxiliary head; for several, '
                    f'target their modules (auxiliary_head.0, ...); '
                    f'{self._valid_help(model)}')
            return
        parsed = self._stage_output(name)
        if parsed is not None:
            stage, index = parsed
            if getattr(model, stage, None) is None:
                raise TargetError(f'target {name!r}: the model has no {stage}; '
                                  f'{self._valid_help(model)}')
            count = _output_count(getattr(model, stage), stage)
            if count is not None and not -count <= index < count:
                raise TargetError(f'target {name!r} is out of range; '
                                  f'{self._valid_help(model)}')
            return
        try:
            model.get_submodule(name)
        except AttributeError:
            raise TargetError(f'unknown target {name!r}; {self._valid_help(model)}') \
                from None

    def _stage_output(self, name: str) -> Optional[Tuple[str, int]]:
        """('backbone', i) for 'backbone.i' and ('neck', i) for 'neck.i' on a segmentor."""
        if not self.segmentor:
            return None
        stage, _, index = name.partition('.')
        if stage in ('backbone', 'neck') and index.lstrip('-').isdigit():
            return stage, int(index)
        return None

    def _is_module_path(self, name: str) -> bool:
        if self._stage_output(name) is not None:
            return False
        if self.segmentor:
            return name not in ('all', 'decode_head', 'seg_logits', 'auxiliary_head')
        return name != 'output'

    # ---- forward -------------------------------------------------------------------
    def _deepest_stage(self, names: Sequence[str]) -> int:
        depth = 0
        for name in names:
            if name in ('all', 'decode_head', 'seg_logits'):
                level = 2
            elif name == 'auxiliary_head':
                level = 3
            else:
                head = name.split('.')[0]
                level = STAGES.index(head) if head in STAGES else len(STAGES)
            depth = max(depth, level)
        return depth

    def __call__(self, inputs: torch.Tensor,
                 positions: Optional[Sequence[int]] = None) -> Dict[str, torch.Tensor]:
        """Run the forward and return ``{name: (B, C, h, w)}`` in :attr:`names` order.

        ``positions`` (the images' dataset positions) go to the head runner."""
        input_hw = tuple(inputs.shape[-2:])
        module_names = [n for n in self._requested if self._is_module_path(n)]
        stage_names = [n for n in self._requested if n not in module_names]
        captured: Dict[str, torch.Tensor] = {}
        pending = set(module_names)
        # the forward may stop early only when no stage-level name is still needed
        can_stop = not stage_names

        def make_hook(name):
            def hook(_module, _args, output):
                captured[name] = as_feature_map(output, name, input_hw)
                pending.discard(name)
                if can_stop and not pending:
                    raise _AllCaptured
            return hook

        handles = [self.model.get_submodule(n).register_forward_hook(make_hook(n))
                   for n in module_names]
        try:
            if self.segmentor:
                self._segmentor_forward(inputs, stage_names, captured,
                                        self._deepest_stage(self._requested), positions)
            else:
                output = self.model(inputs)
                if 'output' in stage_names:
                    captured['output'] = as_feature_map(output, 'output', input_hw)
        except _AllCaptured:
            pass
        finally:
            for handle in handles:
                handle.remove()
        if self._resolved is None:
            self._resolved = self._resolve(captured)
        missing = [n for n in self._resolved if n not in captured]
        if missing:
            raise TargetError(f'targets {missing} were not produced by the forward pass; '
                              f'{self._valid_help(self.model)}')
        return {n: captured[n] for n in self._resolved}

    def _resolve(self, captured: Dict[str, torch.Tensor]) -> List[str]:
        names: List[str] = []
        for name in self._requested:
            if name == 'all':
                names += [n for n in captured if n.startswith(('backbone.', 'neck.'))
                          and self._stage_output(n)]
                names.append('decode_head')
            elif (stage := self._stage_output(name)) is not None:
                names.append(f'{stage[0]}.{stage[1] % self._counts[stage[0]]}')
            else:
                names.append(name)
        return list(dict.fromkeys(names))

    def _record(self, stage: str, outputs, wanted, captured, input_hw) -> None:
        if isinstance(outputs, torch.Tensor):
            outputs = [outputs]
        outputs = list(outputs)
        self._counts[stage] = len(outputs)
        want_all = 'all' in wanted
        for name in wanted:
            parsed = self._stage_output(name)
            if parsed and parsed[0] == stage and not -len(outputs) <= parsed[1] < len(outputs):
                raise TargetError(f'target {name!r}: the {stage} returns {len(outputs)} '
                                  f'outputs ({stage}.0 to {stage}.{len(outputs) - 1})')
        indices = {p[1] % len(outputs) for n in wanted
                   if (p := self._stage_output(n)) and p[0] == stage}
        for i, out in enumerate(outputs):
            if want_all or i in indices:
                captured[f'{stage}.{i}'] = as_feature_map(out, f'{stage}.{i}', input_hw)

    def _segmentor_forward(self, inputs, wanted, captured, depth, positions=None) -> None:
        model, input_hw = self.model, tuple(inputs.shape[-2:])
        feats = model.backbone(inputs)
        self._record('backbone', feats, wanted, captured, input_hw)
        if depth < 1:
            return
        if getattr(model, 'neck', None) is not None:
            feats = model.neck(feats)
            self._record('neck', feats, wanted, captured, input_hw)
        if depth < 2:
            return
        logits, seg_logits = self.head_runner(model, feats, input_hw, positions)
        if 'decode_head' in wanted or 'all' in wanted:
            captured['decode_head'] = logits
        if 'seg_logits' in wanted:
            captured['seg_logits'] = seg_logits
        if depth >= 3:
            aux = model.auxiliary_head
            outs = [h(feats) for h in aux] if isinstance(aux, nn.ModuleList) else aux(feats)
            if 'auxiliary_head' in wanted:
                captured['auxiliary_head'] = outs


def plain_head_runner(model: nn.Module, feats, input_hw: Tuple[int, int],
                      positions: Optional[Sequence[int]] = None
                      ) -> Tuple[torch.Tensor, torch.Tensor]:
    """The default :data:`HeadRunner`: the head's ``forward`` output (a cascade's
    later stages also take the previous logits) and that resized to the input.
    Right for heads whose prediction is their resized ``forward``; the framework
    layer supplies a runner that follows each head's own prediction path."""
    head = model.decode_head
    if isinstance(head, nn.ModuleList):
        logits = head[0](feats)
        for stage in head[1:]:
            logits = stage(feats, logits)
        head = head[-1]
    else:
        logits = head(feats)
    seg_logits = F.interpolate(logits, size=input_hw, mode='bilinear',
                               align_corners=getattr(head, 'align_corners', False))
    return logits, seg_logits
