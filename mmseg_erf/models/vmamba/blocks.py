"""VSS blocks of both VMamba generations."""
from typing import Type

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmcv.cnn.bricks import DropPath

from .layers import LayerNorm2d, Mlp

__all__ = ['VSSBlock', 'VSSBlockGated']


class _Checkpointed(nn.Module):
    """``forward`` = ``_forward``, recomputed in backward when ``use_checkpoint``."""

    use_checkpoint = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_checkpoint and x.requires_grad:
            return cp.checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)


class VSSBlock(_Checkpointed):
    """New generation: x + SS2D(LN(x)), then x + MLP(LN(x)), channel-first.

    Args:
        dim (int): Channels.
        drop_path (float): Stochastic depth rate.
        ss2d (type): The SS2D class.
        ssm_cfg (dict): Keyword arguments of ``ss2d`` (without d_model).
        mlp_ratio (float): Hidden channels of the MLP per channel.
        mlp_drop_rate (float): Dropout inside the MLP.
        use_checkpoint (bool): Recompute the block in backward to save memory.
    """

    def __init__(self, dim, drop_path=0., ss2d: Type[nn.Module] = None, ssm_cfg=None,
                 mlp_ratio=4.0, mlp_drop_rate=0., use_checkpoint=False):
        super().__init__()
        self.use_checkpoint = use_checkpoint
        self.norm = LayerNorm2d(dim)
        self.op = ss2d(d_model=dim, **(ssm_cfg or {}))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = LayerNorm2d(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=mlp_drop_rate)

    def _forward(self, x):
        x = x + self.drop_path(self.op(self.norm(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class VSSBlockGated(_Checkpointed):
    """First generation: x + SS2D(LN(x)) on channels-last tensors, no MLP
    (``mlp_ratio=0``).

    Args:
        dim (int): Channels.
        drop_path (float): Stochastic depth rate.
        ss2d (type): The SS2D class (z-gated).
        ssm_cfg (dict): Keyword arguments of ``ss2d`` (without d_model).
        use_checkpoint (bool): Recompute the block in backward to save memory.
    """

    def __init__(self, dim, drop_path=0., ss2d: Type[nn.Module] = None, ssm_cfg=None,
                 use_checkpoint=False):
        super().__init__()
        self.use_checkpoint = use_checkpoint
        self.norm = nn.LayerNorm(dim)
        self.op = ss2d(d_model=dim, **(ssm_cfg or {}))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def _forward(self, x):
        return x + self.drop_path(self.op(self.norm(x)))
