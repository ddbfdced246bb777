"""What VMamba backbone a state dict holds, and which config of this repo builds it.

Read from names and shapes alone: the generation (z-gated SS2D with patch
merging and no MLP, or the new SS2D with an MLP), dims and depths per stage,
d_state and ssm_ratio. Used by ``tools/vmamba_ckpt.py`` and by the checkpoint
loader's mismatch error, so that a wrong config names the right one instead of
listing hundreds of missing keys.

VMamba ships the same backbones three ways: ImageNet ``ckpt_epoch_*.pth``
(weights under ``model`` and ``model_ema``, with a ``classifier``), COCO Mask
R-CNN checkpoints written by mmdet (``state_dict`` with ``backbone.*``, ``neck.*``,
``rpn_head.*``, ``roi_head.*``) and ADE20K UperNet checkpoints (``state_dict`` with
``backbone.*`` and the heads); :func:`backbone_weights` takes the backbone out of
any of them.
"""
import glob
import os.path as osp
import re
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import Mapping, Optional, Sequence, Tuple

import torch
from mmengine.config import Config

from .generations import generation_of
from .names import rename_legacy_keys

__all__ = ['VMambaArchitecture', 'BackboneWeights', 'architecture_of', 'backbone_weights',
           'matching_configs', 'describe_mismatch', 'backbone_hint', 'mismatch_hint',
           'checkpoint_report', 'CONFIG_ROOT']

#: configs/vmamba of a source checkout (absent when installed without the repo)
CONFIG_ROOT = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.dirname(
    osp.abspath(__file__))))), 'configs', 'vmamba')
_BLOCK = re.compile(r'layers\.(\d+)\.blocks\.(\d+)\.')
_GENERATION_TITLES = {'vssm': 'first-generation VMamba (v0)', 'vssm1': 'new-generation VMamba (v2)'}


@dataclass(frozen=True)
class VMambaArchitecture:
    """A VMamba backbone as its parameters describe it.

    Attributes:
        generation (str | None): 'vssm' (first), 'vssm1' (new), None (a mix
            no release has).
        dims (tuple): Channels per stage.
        depths (tuple): Blocks per stage.
        d_state (int): SSM state size.
        ssm_ratio (float): d_inner / dims.
        mlp (bool): Whether blocks have an MLP.
        old_names (bool): January 2024 parameter names.
    """
    generation: Optional[str]
    dims: Tuple[int, ...]
    depths: Tuple[int, ...]
    d_state: int
    ssm_ratio: float
    mlp: bool
    old_names: bool = False

    def describe(self) -> str:
        title = _GENERATION_TITLES.get(self.generation, 'VMamba of no released generation')
        names = ", January 2024 names" if self.old_names else ''
        return (f'{title} backbone (dims {list(self.dims)}, depths {list(self.depths)}, '
                f'd_state {self.d_state}, ssm_ratio {self.ssm_ratio:g}, '
                f'{"with" if self.mlp else "no"} MLP{names})')

    def same_model(self, other: 'VMambaArchitecture') -> bool:
        return (self.generation, self.dims, self.depths, self.d_state, self.ssm_ratio,
                self.mlp) == (other.generation, other.dims, other.depths, other.d_state,
                              other.ssm_ratio, other.mlp)


def _shape(value) -> tuple:
    return tuple(value.shape) if hasattr(value, 'shape') else tuple(value)


def architecture_of(state_dict: Mapping, prefix: str = '') -> Optional[VMambaArchitecture]:
    """The VMamba backbone under ``prefix`` in ``state_dict`` (tensors or shapes), or None.

    Args:
        state_dict (Mapping): name -> tensor (or shape); old or current names.
        prefix (str): Where the backbone's names start, e.g. 'backbone.'.
    """
    names = {k[len(prefix):]: _shape(v) for k, v in state_dict.items() if k.startswith(prefix)}
    old_names = rename_legacy_keys(names) > 0
    blocks = {}
    for name in names:
        match = _BLOCK.match(name)
        if match:
            i, j = map(int, match.groups())
            blocks[i] = max(blocks.get(i, 0), j + 1)
    if not blocks or 0 not in blocks or 'layers.0.blocks.0.op.A_logs' not in names:
        return None
    stages = range(max(blocks) + 1)
    try:
        dims = tuple(names[f'layers.{i}.blocks.0.norm.weight'][0] for i in stages)
        a_logs = names['layers.0.blocks.0.op.A_logs']
        in_proj = names['layers.0.blocks.0.op.in_proj.weight']
    except KeyError:
        return None
    d_inner = a_logs[0] // 4
    gated = in_proj[0] == 2 * d_inner
    mlp = 'layers.0.blocks.0.mlp.fc1.weight' in names
    merging = 'layers.0.downsample.reduction.weight' in names or len(dims) == 1
    generation = 'vssm' if gated and not mlp and merging else \
        'vssm1' if not gated and mlp and not merging else None
    return VMambaArchitecture(generation, dims, tuple(blocks.get(i, 0) for i in stages),
                              a_logs[1], d_inner / dims[0], mlp, old_names)


def _config_architecture(backbone: Mapping) -> Optional[VMambaArchitecture]:
    try:
        generation = generation_of(backbone.get('forward_type', 'v05_noz')).name
    except ValueError:
        return None
    depths = tuple(backbone.get('depths', (2, 2, 8, 2)))
    dims = backbone.get('dims', 96)
    dims = tuple(dims * 2**i for i in range(len(depths))) if isinstance(dims, int) else \
        tuple(dims)
    return VMambaArchitecture(generation, dims, depths, backbone.get('ssm_d_state', 1),
                              float(backbone.get('ssm_ratio', 1.0)),
                              backbone.get('mlp_ratio', 4.0) > 0)


@lru_cache(maxsize=1)
def _release_configs() -> Tuple[Tuple[str, VMambaArchitecture, Optional[int]], ...]:
    """(path, backbone, decode-head classes) of every config under configs/vmamba."""
    found = []
    for path in sorted(glob.glob(osp.join(CONFIG_ROOT, '**', '*.py'), recursive=True)):
        if '_base_' in osp.relpath(path, CONFIG_ROOT).split(osp.sep):
            continue
        model = Config.fromfile(path).model
        if 'MM_VSSM' not in str(model.backbone.get('type')):
            continue
        arch = _config_architecture(model.backbone)
        if arch is not None:
            found.append((path, arch, model.get('decode_head', {}).get('num_classes')))
    return tuple(found)


def matching_configs(arch: VMambaArchitecture, num_classes: Optional[int] = None,
                     relative_to: Optional[str] = None) -> Sequence[str]:
    """Config files of configs/vmamba whose backbone is ``arch`` (those whose decode head
    has ``num_classes`` classes first); [] when none (or no source checkout)."""
    hits = [(path, classes) for path, other, classes in _release_configs()
            if other.same_model(arch)]
    hits.sort(key=lambda hit: (num_classes is not None and hit[1] != num_classes, hit[0]))
    root = relative_to or osp.dirname(osp.dirname(CONFIG_ROOT))
    return [osp.relpath(path, root) for path, _ in hits]


def _advice(arch: Optional[VMambaArchitecture], num_classes=None) -> str:
    if arch is None:
        return 'it holds no VMamba backbone'
    configs = matching_configs(arch, num_classes)
    if not configs:
        return f'it holds a {arch.describe()}, which no config in configs/vmamba builds'
    also = f' (same backbone: {", ".join(configs[1:])})' if configs[1:] else ''
    return f'it holds a {arch.describe()}: use {configs[0]}{also}'


def describe_mismatch(backbone, state_dict: Mapping, missing: Sequence[str] = ()) -> str:
    """One sentence for a backbone state dict that does not fit ``backbone``."""
    mine = architecture_of(backbone.state_dict())
    theirs = architecture_of(state_dict)
    model = f'this model is a {mine.describe()}' if mine else 'this model is no VMamba'
    if theirs is not None and mine is not None and theirs.same_model(mine):
        extra = [k for k in state_dict if k not in backbone.state_dict()]
        return (f'{model} like the checkpoint, but {len(missing)} tensors are missing '
                f'(e.g. {list(missing)[:3]}) and {len(extra)} left over (e.g. {extra[:3]})')
    return f'{model}; {_advice(theirs)}'


def backbone_hint(backbone, state_dict: Mapping, num_classes=None) -> Optional[str]:
    """For a backbone state dict (backbone-relative names) that does not fit ``backbone``:
    which config of this repo builds the VMamba it holds, or None when it holds no VMamba
    backbone or the backbones agree (the mismatch is elsewhere)."""
    theirs = architecture_of(state_dict)
    if theirs is None:
        return None
    mine = architecture_of(backbone.state_dict()) if backbone is not None else None
    if mine is not None and mine.same_model(theirs):
        return None
    model_part = f'the config builds a {mine.describe()}' if mine else \
        'the config builds no VMamba'
    return f'{model_part}, but {_advice(theirs, num_classes)}'


def mismatch_hint(model, state_dict: Mapping) -> Optional[str]:
    """:func:`backbone_hint` for a segmentor state dict that does not fit ``model``."""
    head = state_dict.get('decode_head.conv_seg.weight')
    backbone = {k[len('backbone.'):]: v for k, v in state_dict.items()
                if k.startswith('backbone.')}
    return backbone_hint(getattr(model, 'backbone', None), backbone,
                         _shape(head)[0] if head is not None else None)


#: Top-level entries of an mmdet two-stage detector's state dict besides the backbone.
_DETECTOR_PARTS = ('rpn_head', 'roi_head', 'bbox_head', 'mask_head')


@dataclass(frozen=True)
class BackboneWeights:
    """Backbone tensors taken out of a checkpoint.

    Attributes:
        state_dict (OrderedDict): Backbone-relative names (current VMamba names).
        kind (str): 'classification', 'detection' or 'segmentation'.
        ignored (tuple): Top-level parts left out ('classifier', 'neck', 'roi_head', ...).
        renamed (int): Entries renamed from the January 2024 names.
    """
    state_dict: OrderedDict
    kind: str
    ignored: Tuple[str, ...]
    renamed: int


def _entries(checkpoint: Mapping, key: str, source: str):
    """(state dict, whether it is an mm* model state dict with ``backbone.`` names)."""
    if isinstance(checkpoint.get('state_dict'), Mapping):
        return checkpoint['state_dict'], True
    if isinstance(checkpoint.get(key), Mapping):
        return checkpoint[key], False
    if checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        return checkpoint, any(k.startswith('backbone.') for k in checkpoint)
    raise ValueError(f'{source} has no weights under {key!r} or "state_dict"; its entries are '
                     f'{sorted(map(str, checkpoint))[:10]} (VMamba classification checkpoints '
                     'use pretrained_key="model" or "model_ema")')


def backbone_weights(checkpoint: Mapping, key: str = 'model',
                     source: str = 'the checkpoint') -> BackboneWeights:
    """The backbone tensors of a VMamba checkpoint of any of the three kinds.

    Args:
        checkpoint (Mapping): The loaded file.
        key (str): Entry of a classification checkpoint: 'model' or 'model_ema'.
        source (str): How messages name the checkpoint.

    Raises:
        ValueError: When the checkpoint has no weights under ``key`` or 'state_dict'.
    """
    state, wrapped = _entries(checkpoint, key, source)
    state = OrderedDict((k[len('module.'):] if k.startswith('module.') else k, v)
                        for k, v in state.items())
    if wrapped:
        parts = sorted({k.split('.', 1)[0] for k in state if not k.startswith('backbone.')})
        state = OrderedDict((k[len('backbone.'):], v) for k, v in state.items()
                            if k.startswith('backbone.'))
        kind = 'detection' if set(parts) & set(_DETECTOR_PARTS) else 'segmentation'
    else:
        parts, kind = [], 'classification'
    renamed = rename_legacy_keys(state)
    if not wrapped:
        parts = ['classifier'] if any(k.startswith('classifier.') for k in state) else []
        state = OrderedDict((k, v) for k, v in state.items() if not k.startswith('classifier.'))
    return BackboneWeights(state, kind, tuple(parts), renamed)


_KIND_TEXT = {
    'segmentation': 'a segmentation checkpoint (state_dict with backbone.* and heads)',
    'detection': 'a detection checkpoint (mmdet state_dict; only backbone.* fits MM_VSSM)',
    'classification': 'an ImageNet classification checkpoint',
}


def checkpoint_report(checkpoint: Mapping, path: str) -> Sequence[str]:
    """Lines saying what VMamba checkpoint ``checkpoint`` (loaded from ``path``) is, which
    config of this repo loads it, and the command.

    Raises:
        ValueError: When it holds no VMamba backbone.
    """
    keys = ('model', 'model_ema') if any(
        isinstance(checkpoint.get(k), Mapping) for k in ('model', 'model_ema')) and \
        not isinstance(checkpoint.get('state_dict'), Mapping) else ('model', )
    lines = []
    for key in keys:
        if key not in checkpoint and len(keys) > 1:
            continue
        weights = backbone_weights(checkpoint, key, path)
        arch = architecture_of(weights.state_dict)
        if arch is None:
            raise ValueError(f'{path} holds no VMamba backbone (no layers.*.blocks.*.op.A_logs '
                             'entries); it is not a VMamba checkpoint')
        arch = VMambaArchitecture(**{**arch.__dict__, 'old_names': weights.renamed > 0})
        entry = f' [{key}]' if weights.kind == 'classification' else ''
        lines.append(f'{path}{entry}: {_KIND_TEXT[weights.kind]}')
        lines.append(f'  backbone: {arch.describe()}')
        head = checkpoint.get('state_dict', {}).get('decode_head.conv_seg.weight') \
            if weights.kind == 'segmentation' else None
        configs = matching_configs(arch, _shape(head)[0] if head is not None else None)
        if not configs:
            lines.append('  no config in configs/vmamba builds this backbone')
            continue
        lines.append(f'  config: {configs[0]}')
        if configs[1:]:
            lines.append(f'  same backbone: {", ".join(configs[1:])}')
        if weights.kind == 'segmentation':
            lines.append(f'  run: python tools/erf_seg.py {configs[0]} {path}')
        else:
            option = '' if key == 'model' else f' model.backbone.pretrained_key={key}'
            lines.append(f'  run: python tools/erf_seg.py {configs[0]} --cfg-options '
                         f'model.backbone.pretrained={path}{option}   (heads random)')
    return lines
