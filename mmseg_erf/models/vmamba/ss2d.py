"""SS2D, the 2D selective-scan token mixer of VMamba (its ``forward_type='v05_noz'``).

in_proj -> depthwise conv -> SiLU -> cross scan (4 directions) -> selective scan
-> cross merge -> LayerNorm -> out_proj. ``v05`` projects with grouped 1x1
convolutions ("no einsum") and ``noz`` drops the gating branch, so
``in_proj`` maps d_model to d_inner channels only.

Inside, tensors are channels-last (B, H, W, C) / token-major (B, L, C): the
LayerNorm and the projections are then plain matrix products, the depthwise
convolution runs on channels-last memory (about ten times faster on CPU than
on NCHW) and the scan reads contiguous channel vectors.
"""
import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .cuda_scan import cuda_backend_available
from .selective_scan import selective_scan, selective_scan_tokens

__all__ = ['SSMCore', 'SS2D', 'cross_scan', 'cross_merge']

#: Scan directions: row-major, column-major, and both reversed.
NUM_DIRECTIONS = 4


def cross_scan(x: torch.Tensor, per_direction: bool = False) -> torch.Tensor:
    """(B, H, W, C) -> (B, H*W, 4, C): the four scan orders of VMamba.

    0: row-major, 1: column-major, 2: row-major reversed, 3: column-major
    reversed.

    Args:
        x (Tensor): (B, H, W, C), or (B, H, W, 4, C) with ``per_direction``,
            where direction k reads only ``x[..., k, :]``.
        per_direction (bool): See ``x``.
    """
    batch, height, width = x.shape[:3]
    length = height * width
    rows = x.reshape(batch, length, *x.shape[3:])
    cols = x.transpose(1, 2).reshape(batch, length, *x.shape[3:])
    if per_direction:
        rows, cols = rows.unbind(2), cols.unbind(2)
        return torch.stack((rows[0], cols[1], rows[2].flip(1), cols[3].flip(1)), dim=2)
    return torch.stack((rows, cols, rows.flip(1), cols.flip(1)), dim=2)


def cross_merge(ys: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, H*W, 4, C) in the four scan orders -> (B, H, W, C), their sum."""
    batch, _, _, channels = ys.shape
    # unbind, not ys[:, :, k]: its backward is one stack instead of four
    # full-size zero-filled gradients
    y0, y1, y2, y3 = ys.unbind(2)
    rows = y0 + y2.flip(1)
    cols = y1 + y3.flip(1)
    return rows.view(batch, height, width, channels) + \
        cols.view(batch, width, height, channels).transpose(1, 2)


class SSMCore(nn.Module):
    """The parameters and the four-direction selective scan every SS2D shares.

    Registers VMamba's own SS2D parameters (``x_proj_weight``, ``A_logs``, ``Ds``,
    ``dt_projs_weight``, ``dt_projs_bias``, in that state-dict order); the
    subclasses add the projections, convolution and norm around the scan.

    Args:
        d_model (int): Input/output channels.
        d_state (int): SSM state size N.
        d_inner (int): Channels of the scan.
        dt_rank (int | str): Rank of the step-size projection; 'auto' means
            ceil(d_model / 16).
        chunk_size (int, optional): ``chunk_size`` of the selective scan
            (None: automatic).
        scan_backend (str): ``backend`` of the selective scan: 'auto', 'torch'
            (PyTorch operations only), 'cpu' (the compiled CPU kernel) or 'cuda'.
    """

    def __init__(self, d_model: int, d_state: int, d_inner: int, dt_rank='auto',
                 chunk_size: Optional[int] = None, scan_backend: str = 'auto'):
        super().__init__()
        k = NUM_DIRECTIONS
        self.d_model, self.d_state, self.d_inner = int(d_model), int(d_state), int(d_inner)
        self.dt_rank = int(math.ceil(d_model / 16) if dt_rank == 'auto' else dt_rank)
        self.chunk_size, self.scan_backend = chunk_size, scan_backend
        self.x_proj_weight = nn.Parameter(
            torch.empty(k, self.dt_rank + 2 * self.d_state, self.d_inner))
        self.A_logs = nn.Parameter(torch.empty(k * self.d_inner, self.d_state))
        self.Ds = nn.Parameter(torch.empty(k * self.d_inner))
        self.dt_projs_weight = nn.Parameter(torch.empty(k, self.d_inner, self.dt_rank))
        self.dt_projs_bias = nn.Parameter(torch.empty(k, self.d_inner))

    @torch.no_grad()
    def reset_ssm_parameters(self, dt_min=0.001, dt_max=0.1, dt_init_floor=1e-4, dt_scale=1.0):
        """Mamba's initialisation of the SSM parameters (VMamba's ``initialize='v0'``)."""
        if self.x_proj_weight.is_meta:
            return
        # x_proj: the default nn.Linear init, U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        bound = 1 / math.sqrt(self.d_inner)
        self.x_proj_weight.uniform_(-bound, bound)
        std = self.dt_rank**-0.5 * dt_scale
        self.dt_projs_weight.uniform_(-std, std)
        # softplus(bias) is log-uniform in [dt_min, dt_max]; the bias is its inverse
        dt = torch.exp(
            torch.rand(self.dt_projs_bias.shape) * (math.log(dt_max) - math.log(dt_min)) +
            math.log(dt_min)).clamp(min=dt_init_floor)
        self.dt_projs_bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        # S4D-real: A = -(1..N) per channel, stored as log
        a = torch.arange(1, self.d_state + 1, dtype=torch.float32)
        self.A_logs.copy_(torch.log(a).expand_as(self.A_logs))
        self.Ds.fill_(1.0)

    def scan(self, x: torch.Tensor) -> torch.Tensor:
        """The four-direction selective scan: (B, H, W, d_inner) -> same shape."""
        batch, height, width, channels = x.shape
        k, length = NUM_DIRECTIONS, height * width
        rank, nstate = self.dt_rank, self.d_state
        xs = cross_scan(x).view(batch, length, k * channels)
        # VMamba projects each direction's sequence with its own weights (grouped
        # 1x1 convolutions). Projections are per pixel, so they commute with the
        # scan orders: project the pixels once with all four weights (one GEMM),
        # then put direction k's projection in scan order k.
        x_dbl = F.linear(x, self.x_proj_weight.reshape(-1, channels))
        x_dbl = cross_scan(x_dbl.view(batch, height, width, k, -1), per_direction=True)
        dts, bs, cs = torch.split(x_dbl, [rank, nstate, nstate], dim=3)
        # dt projection as one block-diagonal GEMM: faster on CPU than four thin ones
        dts = F.linear(dts.reshape(batch, length, k * rank),
                       torch.block_diag(*self.dt_projs_weight))
        params = (-torch.exp(self.A_logs.float()), self.Ds.float(),
                  self.dt_projs_bias.reshape(-1).float())
        if self.scan_backend == 'cuda' or (self.scan_backend == 'auto' and xs.is_cuda
                                           and cuda_backend_available()):
            # the CUDA kernels take channel-major (B, K*D, L) tensors
            ys = selective_scan(xs.transpose(1, 2), dts.transpose(1, 2), params[0],
                                bs.permute(0, 2, 3, 1), cs.permute(0, 2, 3, 1), *params[1:],
                                delta_softplus=True, backend='cuda').transpose(1, 2)
        else:
            ys = selective_scan_tokens(xs, dts, params[0], bs, cs, *params[1:],
                                       delta_softplus=True, chunk_size=self.chunk_size,
                                       backend=self.scan_backend)
        return cross_merge(ys.reshape(batch, length, k, channels), height, width)


class SS2D(SSMCore):
    """2D selective scan of VMamba, ``forward_type='v05_noz'``.

    Takes and returns (B, d_model, H, W) tensors (the output is a
    channels-last view).

    Args:
        d_model (int): Input/output channels.
        d_state (int): SSM state size N. Defaults to 1.
        ssm_ratio (float): d_inner = int(ssm_ratio * d_model). Defaults to 1.0.
        dt_rank (int | str): Rank of the step-size projection; 'auto' means
            ceil(d_model / 16). Defaults to 'auto'.
        d_conv (int): Kernel size of the depthwise convolution (odd).
            Defaults to 3.
        conv_bias (bool): Bias in the depthwise convolution. Defaults to False.
        dropout (float): Dropout after out_proj. Defaults to 0.
        dt_min, dt_max, dt_init_floor, dt_scale (float): Mamba's step-size
            initialisation. Defaults to 0.001, 0.1, 1e-4, 1.0.
        chunk_size (int, optional): ``chunk_size`` of the selective scan
            (None: automatic).
        scan_backend (str): ``backend`` of the selective scan. Defaults to 'auto'.
    """

    def __init__(self,
                 d_model: int,
                 d_state: int = 1,
                 ssm_ratio: float = 1.0,
                 dt_rank='auto',
                 d_conv: int = 3,
                 conv_bias: bool = False,
                 dropout: float = 0.,
                 dt_min: float = 0.001,
                 dt_max: float = 0.1,
                 dt_init_floor: float = 1e-4,
                 dt_scale: float = 1.0,
                 chunk_size: Optional[int] = None,
                 scan_backend: str = 'auto'):
        super().__init__(d_model, d_state, int(ssm_ratio * d_model), dt_rank, chunk_size,
                         scan_backend)
        # Module order is VMamba's (out_norm, in_proj, conv2d, out_proj).
        # in_proj/out_proj/out_norm act on channels-last tensors, so they are the
        # plain nn modules (same parameter shapes).
        self.out_norm = nn.LayerNorm(self.d_inner)
        self.in_proj = nn.Linear(self.d_model, self.d_inner, bias=False)
        self.act = nn.SiLU()
        self.conv2d = nn.Conv2d(self.d_inner, self.d_inner, kernel_size=d_conv,
                                padding=(d_conv - 1) // 2, groups=self.d_inner, bias=conv_bias)
        self.out_proj = nn.Linear(self.d_inner, self.d_model, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.reset_ssm_parameters(dt_min, dt_max, dt_init_floor, dt_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, d_model, H, W) -> (B, d_model, H, W)."""
        x = self.in_proj(x.permute(0, 2, 3, 1))
        x = self.act(self.conv2d(x.permute(0, 3, 1, 2)))
        y = self.scan(x.permute(0, 2, 3, 1))
        y = self.out_proj(self.out_norm(y.to(x.dtype)))
        return self.dropout(y.permute(0, 3, 1, 2))
