"""Selective scan (the S6 recurrence of Mamba/VMamba): one entry point, three paths.

For every channel ``c`` of group ``k`` (c in k*D .. k*D + D - 1) and state ``n``::

    dt[t]   = softplus(delta[t] + delta_bias)        (softplus, bias optional)
    h[n, t] = exp(dt[t] * A[n]) * h[n, t - 1] + dt[t] * B[k, n, t] * u[t]
    y[t]    = sum_n C[k, n, t] * h[n, t] + D * u[t]

* ``'torch'`` (:mod:`.torch_scan`): PyTorch operations only, tile by tile, any
  device and any inputs; the reference implementation of this package.
* ``'cpu'`` (:mod:`.cpu_kernel`): the recurrence compiled from ``cpu_scan.c``
  at first use, for CPU tensors in the Mamba/VMamba case (softplus step sizes,
  A <= 0, channels per direction a multiple of 8). It keeps each block's
  states in registers, where the PyTorch path streams them through memory:
  about 4x faster at d_state 1 and 8x at d_state 16 (``tools/benchmark_scan.py``).
* ``'cuda'`` (:mod:`.cuda_scan`): Mamba's or VMamba's CUDA kernel, when installed.

``backend='auto'`` takes the CUDA kernel for CUDA tensors when one is
importable, the compiled kernel for CPU inputs it accepts, else PyTorch.
:func:`selective_scan_reference` is the sequential loop the tests compare with.
"""
from typing import Optional

import torch
import torch.nn.functional as F

from .cpu_kernel import cpu_kernel_applies, cpu_kernel_error, cpu_kernel_scan
from .cuda_scan import cuda_backend_available, selective_scan_cuda
from .prefix_scan import linear_scan
from .torch_scan import torch_scan_tokens

__all__ = ['selective_scan', 'selective_scan_tokens', 'selective_scan_reference', 'linear_scan']

_BACKENDS = ('auto', 'torch', 'cpu', 'cuda')


def selective_scan_tokens(u: torch.Tensor,
                          delta: torch.Tensor,
                          A: torch.Tensor,
                          B: torch.Tensor,
                          C: torch.Tensor,
                          D: Optional[torch.Tensor] = None,
                          delta_bias: Optional[torch.Tensor] = None,
                          delta_softplus: bool = False,
                          chunk_size: Optional[int] = None,
                          backend: str = 'auto') -> torch.Tensor:
    """:func:`selective_scan` on token-major tensors (the PyTorch and CPU-kernel paths).

    Args:
        u, delta (Tensor): (batch, L, K*D).
        B, C (Tensor): (batch, L, K, N).
        A, D, delta_bias, delta_softplus, chunk_size: As in :func:`selective_scan`.
        backend (str): 'auto' (the compiled CPU kernel where it applies, else
            PyTorch), 'torch' or 'cpu'.

    Returns:
        Tensor: (batch, L, K*D).
    """
    if backend not in ('auto', 'torch', 'cpu'):
        raise ValueError(f'selective_scan_tokens: backend={backend!r} is not one of '
                         f"('auto', 'torch', 'cpu')")
    if chunk_size is not None and not (isinstance(chunk_size, int) and chunk_size >= 1):
        raise ValueError(f'selective_scan: chunk_size must be a positive int or None; '
                         f'got {chunk_size!r}')
    dtype = torch.float64 if u.dtype == torch.float64 else torch.float32

    def cast(t):
        return None if t is None else t.to(dtype)

    if backend != 'torch':
        why = 'CUDA tensors' if u.device.type != 'cpu' else (
            cpu_kernel_applies(u.shape[2] // B.shape[2], A, delta_softplus)
            or cpu_kernel_error(dtype))
        if why is None:
            return cpu_kernel_scan(*map(cast, (u, delta, A, B, C, D, delta_bias)))
        if backend == 'cpu':
            raise ValueError(f'selective_scan: backend="cpu" cannot take {why}; use '
                             f'backend="auto" or "torch"')

    def dense(t):  # token-major or channel-major storage; anything else is copied once
        t = cast(t)
        return t if t.is_contiguous() or t.transpose(1, 2).is_contiguous() else t.contiguous()

    return torch_scan_tokens(dense(u), dense(delta), *map(cast, (A, B, C, D, delta_bias)),
                             delta_softplus, chunk_size)


def _check_inputs(u, delta, A, B, C, D, delta_bias):
    if u.dim() != 3 or delta.shape != u.shape:
        raise ValueError(f'selective_scan: u and delta must both be (batch, K*D, L); got '
                         f'u {tuple(u.shape)} and delta {tuple(delta.shape)}')
    batch, kd, length = u.shape
    if A.dim() != 2 or A.shape[0] != kd:
        raise ValueError(f'selective_scan: A must be (K*D, N) = ({kd}, N); got {tuple(A.shape)}')
    nstate = A.shape[1]
    for name, t in (('B', B), ('C', C)):
        if t.dim() != 4 or t.shape[0] != batch or t.shape[2:] != (nstate, length) \
                or kd % t.shape[1]:
            raise ValueError(f'selective_scan: {name} must be (batch, K, N, L) = ({batch}, K, '
                             f'{nstate}, {length}) with K dividing {kd}; got {tuple(t.shape)}')
    if B.shape[1] != C.shape[1]:
        raise ValueError(f'selective_scan: B and C must have the same K; got {B.shape[1]} '
                         f'and {C.shape[1]}')
    for name, t in (('D', D), ('delta_bias', delta_bias)):
        if t is not None and tuple(t.shape) != (kd, ):
            raise ValueError(f'selective_scan: {name} must be (K*D,) = ({kd},); '
                             f'got {tuple(t.shape)}')


def selective_scan(u: torch.Tensor,
                   delta: torch.Tensor,
                   A: torch.Tensor,
                   B: torch.Tensor,
                   C: torch.Tensor,
                   D: Optional[torch.Tensor] = None,
                   delta_bias: Optional[torch.Tensor] = None,
                   delta_softplus: bool = False,
                   chunk_size: Optional[int] = None,
                   backend: str = 'auto') -> torch.Tensor:
    """Selective scan with the interface of Mamba's/VMamba's CUDA kernels.

    Args:
        u (Tensor): Inputs, (batch, K*D, L).
        delta (Tensor): Step sizes before bias/softplus, (batch, K*D, L).
        A (Tensor): State matrix (negative for a decaying state), (K*D, N).
        B (Tensor): Input projections, (batch, K, N, L); channels of group k
            (k*D .. k*D + D - 1) use B[:, k].
        C (Tensor): Output projections, (batch, K, N, L).
        D (Tensor, optional): Skip weights, (K*D,).
        delta_bias (Tensor, optional): Added to delta, (K*D,).
        delta_softplus (bool): Apply softplus to ``delta + delta_bias``.
        chunk_size (int, optional): Sequence positions per chunk of the
            PyTorch path; bounds its working memory (chunk x batch x K*D x N
            per scratch buffer). None picks about 2**20 state elements per chunk.
        backend (str): 'auto' (a CUDA kernel for CUDA tensors when
            ``selective_scan_cuda_oflex``, ``selective_scan_cuda`` or
            ``mamba_ssm`` is importable; the compiled CPU kernel for CPU
            tensors it takes; else PyTorch), 'torch', 'cpu' or 'cuda'.

    Returns:
        Tensor: (batch, K*D, L), float32 (float64 for float64 inputs), like
        VMamba's ``oflex`` kernel.
    """
    if backend not in _BACKENDS:
        raise ValueError(f'selective_scan: backend={backend!r} is not one of {_BACKENDS}')
    _check_inputs(u, delta, A, B, C, D, delta_bias)
    if backend == 'cuda' or (backend == 'auto' and u.is_cuda and cuda_backend_available()):
        if not (u.is_cuda and cuda_backend_available()):
            raise ValueError('selective_scan: backend="cuda" needs CUDA tensors and one of '
                             'selective_scan_cuda_oflex, selective_scan_cuda or mamba_ssm; '
                             'use backend="auto" or "torch"')
        return selective_scan_cuda(u, delta, A, B, C, D, delta_bias, delta_softplus)
    y = selective_scan_tokens(u.transpose(1, 2), delta.transpose(1, 2), A,
                              B.permute(0, 3, 1, 2), C.permute(0, 3, 1, 2), D, delta_bias,
                              delta_softplus, chunk_size, backend)
    return y.transpose(1, 2)


def selective_scan_reference(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=False):
    """Sequential loop over positions: the ground truth for tests and benchmarks.

    Same arguments and result as :func:`selective_scan`; differentiable by
    autograd; slow (one Python iteration per position). Computes in float64
    for float64 inputs, float32 otherwise.
    """
    _check_inputs(u, delta, A, B, C, D, delta_bias)
    dtype = torch.float64 if u.dtype == torch.float64 else torch.float32
    u, delta, A, B, C = (t.to(dtype) for t in (u, delta, A, B, C))
    batch, kd, length = u.shape
    groups, nstate = B.shape[1], B.shape[2]
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    rep = kd // groups
    B = B.repeat_interleave(rep, dim=1)  # (batch, K*D, N, L)
    C = C.repeat_interleave(rep, dim=1)
    decay = torch.exp(delta[:, :, None, :] * A[None, :, :, None])
    drive = (delta * u)[:, :, None, :] * B
    h = u.new_zeros(batch, kd, nstate)
    ys = []
    # unbind, not decay[..., t]: indexing would make the backward pass
    # quadratic (a full-size zero gradient per position)
    for decay_t, drive_t, c_t in zip(decay.unbind(-1), drive.unbind(-1), C.unbind(-1)):
        h = decay_t * h + drive_t
        ys.append((h * c_t).sum(-1))
    y = torch.stack(ys, dim=-1)
    if D is not None:
        y = y + D.to(dtype)[:, None] * u
    return y
