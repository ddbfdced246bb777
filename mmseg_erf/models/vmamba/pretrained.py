"""VMamba's classification, detection and segmentation files into MM_VSSM and into a
segmentor with a VMamba backbone.

:func:`load_backbone_weights` is ``MM_VSSM(pretrained=...)``; :func:`segmentor_weights`
lets ``mmseg_erf.checkpoint.load_model_weights`` take an ImageNet classification or a
COCO detection checkpoint given as a segmentor's checkpoint (the package registers it
there): only the backbone comes from the file and the heads stay random, which a
classification checkpoint named as the segmentor's would otherwise leave entirely
unloaded. Only backbone tensors are taken; January 2024 names are renamed as VMamba
does.
"""
import os
from collections import OrderedDict
from typing import Mapping, Optional, Sequence, Tuple

import torch
from mmengine.logging import print_log

from ...checkpoint import CheckpointMismatchError, load_checkpoint_file
from .detect import (BackboneWeights, architecture_of, backbone_hint, backbone_weights,
                     describe_mismatch)

__all__ = ['BackboneWeights', 'backbone_weights', 'load_backbone_weights', 'segmentor_weights']


def _misfit(backbone, state: Mapping, fatal: Sequence[str]) -> Optional[str]:
    """Why ``state`` (backbone names) cannot load into ``backbone``, or None. ``fatal``:
    its missing tensors other than outnorm* (classification checkpoints have none, and
    VMamba keeps their initial values)."""
    own = backbone.state_dict()
    if fatal or any(k not in own for k in state) or any(
            tuple(v.shape) != tuple(own[k].shape) for k, v in state.items() if k in own):
        return describe_mismatch(backbone, state, fatal)
    return None


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
        source = os.fspath(path_or_checkpoint)
        checkpoint = load_checkpoint_file(source, map_location='cpu', trust=trust)
    weights = backbone_weights(checkpoint, key, source)
    state, own = weights.state_dict, backbone.state_dict()
    unexpected = [k for k in state if k not in own]
    missing = [k for k in own if k not in state]
    problem = _misfit(backbone, state, [k for k in missing if not k.startswith('outnorm')])
    if problem:
        raise ValueError(f'{source} does not fit this MM_VSSM: {problem}')
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


_FOREIGN_KINDS = {'classification': 'a VMamba ImageNet classification checkpoint',
                  'detection': 'a VMamba COCO detection checkpoint of mmdet'}


def segmentor_weights(model, checkpoint: Mapping,
                      source: str) -> Optional[Tuple[OrderedDict, str]]:
    """A VMamba classification or detection checkpoint given as the checkpoint of
    ``model``, a segmentor with a VMamba backbone: its backbone tensors under
    ``backbone.`` and the line saying so and that the heads are random. None for other
    models and checkpoints (segmentation checkpoints load as they are).

    Registered as a checkpoint adapter of :mod:`mmseg_erf.checkpoint`; a classification
    checkpoint's ``model`` or ``model_ema`` entry is chosen by the backbone's
    ``pretrained_key``.

    Raises:
        CheckpointMismatchError: When the checkpoint holds another VMamba than the
            config builds; the message names the config that builds it.
    """
    backbone = getattr(model, 'backbone', None)
    if not isinstance(backbone, torch.nn.Module) or \
            architecture_of(backbone.state_dict()) is None:
        return None
    key = getattr(backbone, 'pretrained_key', 'model')
    try:
        weights = backbone_weights(checkpoint, key, source)
    except ValueError:  # no weights under key: not a checkpoint this adapter knows
        return None
    state = weights.state_dict
    if weights.kind not in _FOREIGN_KINDS or architecture_of(state) is None:
        return None
    what = _FOREIGN_KINDS[weights.kind] + (f' [{key}]' if weights.kind == 'classification'
                                           else '')
    own = backbone.state_dict()
    initial = [k for k in own if k not in state]
    problem = backbone_hint(backbone, state) or _misfit(
        backbone, state, [k for k in initial if not k.startswith('outnorm')])
    if problem:
        raise CheckpointMismatchError(f'{source} ({what}) does not fit the model: {problem}')
    random = [name for name, part in model.named_children()
              if name != 'backbone' and next(part.parameters(), None) is not None]
    details = [f'{len(own) - len(initial)} tensors']
    details += [f'left out: {", ".join(p + ".*" for p in weights.ignored)}'] \
        if weights.ignored else []
    details += [f'{len(initial)} outnorm tensors keep their initial values'] if initial else []
    heads = f'; {" and ".join(random)} {"is" if len(random) == 1 else "are"} RANDOM (not in ' \
        'that checkpoint)' if random else ''
    return (OrderedDict((f'backbone.{k}', v) for k, v in state.items()),
            f'backbone loaded from {source}, {what} ({"; ".join(details)}){heads}')
