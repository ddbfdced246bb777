"""The backbone weights inside VMamba's classification, detection and segmentation files.

VMamba ships the same backbones three ways: ImageNet ``ckpt_epoch_*.pth``
(weights under ``model`` and ``model_ema``, with a ``classifier``), COCO
Mask R-CNN checkpoints written by mmdet (``state_dict`` with ``backbone.*``,
``neck.*``, ``rpn_head.*``, ``roi_head.*``) and ADE20K UperNet checkpoints
(``state_dict`` with ``backbone.*`` and the heads). Only backbone tensors are
taken; January 2024 names are renamed as VMamba does.
"""
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Mapping, Tuple

import torch
from mmengine.logging import print_log

__all__ = ['BackboneWeights', 'backbone_weights', 'load_backbone_weights']

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
    """
    from .backbone import rename_legacy_keys
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


def load_backbone_weights(backbone, path_or_checkpoint, key: str = 'model',
                          trust: bool = False) -> dict:
    """Load a VMamba classification/detection/segmentation checkpoint into ``backbone``.

    ``outnorm*`` (absent from classification checkpoints) keeps its initial
    values, as in VMamba; everything outside the backbone is left out and the
    log names it.

    Args:
        backbone (MM_VSSM): The model to fill.
        path_or_checkpoint (str | PathLike | Mapping): The file or the loaded dict.
        key (str): 'model' or 'model_ema' (classification checkpoints).
        trust (bool): Unpickle the file with full trust (it can run code).

    Returns:
        dict: 'missing' and 'unexpected' key lists, 'kind' of checkpoint.

    Raises:
        ValueError: When backbone parameters other than outnorm* are missing,
            backbone entries are left over or shapes differ (a checkpoint of
            another variant).
    """
    if isinstance(path_or_checkpoint, Mapping):
        checkpoint, source = path_or_checkpoint, 'the given checkpoint'
    else:
        from ...checkpoint import load_checkpoint_file  # mmseg_erf imports models first
        source = os.fspath(path_or_checkpoint)
        checkpoint = load_checkpoint_file(source, map_location='cpu', trust=trust)
    weights = backbone_weights(checkpoint, key, source)
    state, own = weights.state_dict, backbone.state_dict()
    unexpected = [k for k in state if k not in own]
    missing = [k for k in own if k not in state]
    fatal = [k for k in missing if not k.startswith('outnorm')]
    if fatal or unexpected or any(tuple(state[k].shape) != tuple(v.shape)
                                  for k, v in own.items() if k in state):
        from .detect import describe_mismatch
        raise ValueError(f'{source} does not fit this MM_VSSM: '
                         f'{describe_mismatch(backbone, state, fatal)}')
    backbone.load_state_dict(OrderedDict((k, v) for k, v in state.items() if k in own),
                             strict=False)
    what = {'classification': f'a VMamba classification checkpoint [{key}]',
            'detection': 'a detection checkpoint (mmdet): only backbone.* is used',
            'segmentation': 'a segmentation checkpoint: only backbone.* is used'}[weights.kind]
    ignored = f'; left out: {", ".join(p + ".*" for p in weights.ignored)}' \
        if weights.ignored else ''
    renamed = f'; {weights.renamed} entries renamed from VMamba\'s January 2024 names' \
        if weights.renamed else ''
    print_log(f'MM_VSSM: loaded {len(own) - len(missing)} tensors from {source}, {what}'
              f'{ignored}{renamed}', logger='current')
    if missing:
        print_log(f'MM_VSSM: {len(missing)} tensors not in the checkpoint keep their '
                  f'initial values: {missing}', logger='current')
    return dict(missing=missing, unexpected=unexpected, kind=weights.kind)
