"""The two VMamba generations with released checkpoints, as explicit option sets.

VMamba's ``Backbone_VSSM`` takes a dozen switches (``forward_type``,
``downsample_version``, ``patchembed_version``, ``norm_layer``, ...) whose
combinations mostly never shipped. MM_VSSM accepts the two combinations that
did; ``forward_type`` names the generation and every other switch must then
take that generation's value. Each real difference is a class here, picked
from a table, never parsed out of a string.
"""
from dataclasses import dataclass
from typing import Mapping, Tuple, Type

import torch.nn as nn

from .blocks import VSSBlock, VSSBlockGated
from .layers import (ChannelsLastOutNorm, DownsampleV3, LayerNorm2d, PatchEmbedV1,
                     PatchEmbedV2, PatchMergingV1)
from .ss2d import SS2D
from .ss2d_gated import SS2DGated, SS2DGatedV2Order

__all__ = ['Generation', 'FIRST', 'SECOND', 'GENERATIONS', 'generation_of']


@dataclass(frozen=True)
class Generation:
    """One released VMamba architecture family.

    Attributes:
        name (str): VMamba's config folder: 'vssm' (first) or 'vssm1' (new).
        title (str): How the README and messages call it.
        ss2d (Mapping[str, type]): forward_type -> SS2D class.
        switches (Mapping[str, object]): The value every other switch must have.
        patch_embed, downsample, block, out_norm (type): Its layers.
        has_mlp (bool): mlp_ratio > 0 (True) or == 0 (False).
    """
    name: str
    title: str
    ss2d: Mapping[str, Type[nn.Module]]
    switches: Mapping[str, object]
    patch_embed: Type[nn.Module]
    downsample: Type[nn.Module]
    block: Type[nn.Module]
    out_norm: Type[nn.Module]
    has_mlp: bool


FIRST = Generation(
    name='vssm',
    title='first generation (VMamba v0, segmentation/configs/vssm)',
    ss2d={'v0': SS2DGated, 'v2': SS2DGatedV2Order},
    switches=dict(downsample_version='v1', patchembed_version='v1', norm_layer='ln',
                  ssm_conv=3, ssm_conv_bias=True),
    patch_embed=PatchEmbedV1, downsample=PatchMergingV1, block=VSSBlockGated,
    out_norm=ChannelsLastOutNorm, has_mlp=False)

SECOND = Generation(
    name='vssm1',
    title='new generation (VMamba v2, segmentation/configs/vssm1)',
    ss2d={'v05_noz': SS2D},
    switches=dict(downsample_version='v3', patchembed_version='v2', norm_layer='ln2d'),
    patch_embed=PatchEmbedV2, downsample=DownsampleV3, block=VSSBlock,
    out_norm=LayerNorm2d, has_mlp=True)

GENERATIONS: Tuple[Generation, ...] = (FIRST, SECOND)


def generation_of(forward_type) -> Generation:
    """The generation a ``forward_type`` belongs to; a ValueError for any other value."""
    for generation in GENERATIONS:
        if forward_type in generation.ss2d:
            return generation
    known = ', '.join(f'{t!r} ({g.name})' for g in GENERATIONS for t in g.ss2d)
    raise ValueError(f'MM_VSSM: forward_type={forward_type!r} is not supported; supported: '
                     f'{known} (the values of the released VMamba checkpoints)')
