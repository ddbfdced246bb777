"""SS2D of the first VMamba generation (``segmentation/configs/vssm``): the SiLU z-gate.

in_proj to 2 x d_inner channels, split into x and z -> depthwise conv (with
bias) -> SiLU -> four-direction selective scan (d_state 16) -> LayerNorm ->
times SiLU(z) -> out_proj. Channels-last in and out, like the first
generation's blocks (norm_layer='ln').

Two classes because VMamba has two code paths with the same names, shapes and
computation but another state-dict order: ``forward_type='v0'`` (the original
``SS2Dv0``: in_proj, conv2d, out_norm, out_proj) and ``'v2'`` (the default the
released configs leave in place, ``SS2Dv2``: out_norm first).
"""
from typing import Optional

import torch
import torch.nn as nn

from .ss2d import SSMCore

__all__ = ['SS2DGated', 'SS2DGatedV2Order']


class SS2DGated(SSMCore):
    """VMamba's ``SS2Dv0`` (``forward_type='v0'``), channels-last.

    Args:
        d_model (int): Input/output channels.
        d_state (int): SSM state size N. Defaults to 16.
        ssm_ratio (float): d_inner = int(ssm_ratio * d_model). Defaults to 2.0.
        dt_rank (int | str): 'auto' (ceil(d_model / 16)) or an int.
        dropout (float): Dropout after out_proj. Defaults to 0.
        chunk_size (int, optional): ``chunk_size`` of the selective scan.
        scan_backend (str): ``backend`` of the selective scan. Defaults to 'auto'.
    """

    #: out_norm registered before in_proj (VMamba's SS2Dv2 order)
    norm_first = False

    def __init__(self,
                 d_model: int,
                 d_state: int = 16,
                 ssm_ratio: float = 2.0,
                 dt_rank='auto',
                 dropout: float = 0.,
                 chunk_size: Optional[int] = None,
                 scan_backend: str = 'auto'):
        super().__init__(d_model, d_state, int(ssm_ratio * d_model), dt_rank, chunk_size,
                         scan_backend)
        if self.norm_first:
            self.out_norm = nn.LayerNorm(self.d_inner)
        self.in_proj = nn.Linear(self.d_model, 2 * self.d_inner, bias=False)
        self.act = nn.SiLU()
        # VMamba's v0 fixes the depthwise convolution at 3x3 with bias
        self.conv2d = nn.Conv2d(self.d_inner, self.d_inner, kernel_size=3, padding=1,
                                groups=self.d_inner, bias=True)
        if not self.norm_first:
            self.out_norm = nn.LayerNorm(self.d_inner)
        self.out_proj = nn.Linear(self.d_inner, self.d_model, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.reset_ssm_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, d_model) -> (B, H, W, d_model)."""
        x, z = self.in_proj(x).chunk(2, dim=-1)
        x = self.act(self.conv2d(x.permute(0, 3, 1, 2)))
        y = self.scan(x.permute(0, 2, 3, 1))
        y = self.out_norm(y.to(z.dtype)) * self.act(z)
        return self.dropout(self.out_proj(y))


class SS2DGatedV2Order(SS2DGated):
    """The same SS2D in the state-dict order of VMamba's ``forward_type='v2'``."""

    norm_first = True
