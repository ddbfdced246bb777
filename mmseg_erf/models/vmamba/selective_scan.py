"""Selective scan (the S6 recurrence of Mamba/VMamba) in pure PyTorch.

For every channel ``c`` of group ``k`` (c in k*D .. k*D + D - 1) and state ``n``::

    dt[t]   = softplus(delta[t] + delta_bias)        (softplus, bias optional)
    h[n, t] = exp(dt[t] * A[n]) * h[n, t - 1] + dt[t] * B[k, n, t] * u[t]
    y[t]    = sum_n C[k, n, t] * h[n, t] + D * u[t]

VMamba's pure-PyTorch fallback loops over every position (about a minute and
a half per 512x512 ERF of VMamba-T on 2 CPU cores). Here the sequence is cut
into chunks of ``chunk_size`` positions; the state is carried from one chunk
to the next, and inside a chunk the recurrence ``h[t] = a[t] h[t-1] + b[t]``
is solved by a parallel prefix scan (pairwise reduction, log2(chunk_size)
vectorised levels). The scan only multiplies decays ``a = exp(dt * A)`` in
(0, 1], so nothing overflows whatever the step sizes, unlike
``exp(-cumsum(dt * A))`` formulations, and float32 keeps ~1e-7 relative
accuracy. Work runs in the layout the inputs come in: channel-major (batch,
K*D, L) from :func:`selective_scan` (no transposing copies) or token-major
(batch, L, K*D) from :func:`selective_scan_tokens`, which the VMamba block
uses; the states and the per-chunk scratch buffers follow that layout, and
the scratch buffers are allocated once per call. The backward pass is written
out (the adjoint recurrence is the same scan run backwards, chunk by chunk):
autograd keeps only the inputs, the step sizes and the states.
"""
from typing import Optional

import torch
import torch.nn.functional as F

from .cuda_scan import cuda_backend_available, selective_scan_cuda

__all__ = ['selective_scan', 'selective_scan_tokens', 'selective_scan_reference', 'linear_scan']

#: Target number of state elements (batch x chunk x channels x N) per chunk when
#: chunk_size is None (8 MiB per float32 scratch buffer; 4096 positions at
#: VMamba-T's stage-1 width). Measured at that shape on 2 cores: 1 << 21 beats
#: 1 << 19 and 1 << 20 by 10-25 % in both layouts, because the per-operation overhead
#: and the log2(chunk) levels of the pairwise scan are amortised over more work.
AUTO_CHUNK_ELEMENTS = 1 << 21
_BACKENDS = ('auto', 'torch', 'cuda')


def linear_scan(a: torch.Tensor, b: torch.Tensor, out: Optional[torch.Tensor] = None,
                reverse: bool = False) -> torch.Tensor:
    """Solve ``h[:, t] = a[:, t] * h[:, t - 1] + b[:, t]`` along dim 1, ``h[:, -1] = 0``.

    Pairwise (Blelloch-style) reduction: neighbours ``(2i, 2i+1)`` combine
    into one step of a half-length recurrence, which is solved recursively;
    the skipped positions are then filled in. log2(L) vectorised levels and no
    loop over positions. Not differentiable by autograd (the callers write the
    backward pass); ``a`` is expected in [0, 1].

    Args:
        a (Tensor): Decays, shape (M, L, ...); dims after 1 are independent.
        b (Tensor): Inputs, same shape and dtype.
        out (Tensor, optional): Where to write the result; may be ``b``
            itself (in place) or a strided view.
        reverse (bool): Run from the end instead:
            ``h[:, t] = a[:, t] * h[:, t + 1] + b[:, t]`` with ``h[:, L] = 0``.

    Returns:
        Tensor: ``h``, same shape as ``b``.
    """
    length = b.shape[1]
    if out is None:
        out = torch.empty_like(b)
    if length == 1:
        return out if out is b else out.copy_(b)
    n = length // 2
    # pairs (p, q), q the later position in scan order; the reduced recurrence
    # runs over the q's: h[q] = (a[q] a[p]) h[previous q] + (a[q] b[p] + b[q])
    if reverse:
        lo = length - 2 * n  # a leading unpaired position when L is odd
        p, q = slice(lo + 1, length, 2), slice(lo, length, 2)
    else:
        p, q = slice(0, 2 * n, 2), slice(1, 2 * n, 2)
    ap, aq, bp, bq = a[:, p], a[:, q], b[:, p], b[:, q]
    hq = linear_scan(ap * aq, torch.addcmul(bq, aq, bp), out=out[:, q], reverse=reverse)
    # then h[p] = a[p] h[q of the previous pair] + b[p]; in place is safe since
    # every write below reads only its own position of b
    if reverse:
        if out is not b:
            out[:, -1] = b[:, -1]
        if n > 1:
            torch.addcmul(bp[:, :-1], ap[:, :-1], hq[:, 1:], out=out[:, lo + 1:length - 2:2])
        if lo:
            torch.addcmul(b[:, 0], a[:, 0], hq[:, 0], out=out[:, 0])
    else:
        if out is not b:
            out[:, 0] = b[:, 0]
        if n > 1:
            torch.addcmul(bp[:, 1:], ap[:, 1:], hq[:, :-1], out=out[:, 2:2 * n:2])
        if length % 2:
            torch.addcmul(b[:, -1], a[:, -1], hq[:, -1], out=out[:, -1])
    return out


def _channel_major(t: torch.Tensor) -> bool:
    """(Bt, L, K*D) stored as (Bt, K*D, L): the layout of :func:`selective_scan`'s inputs."""
    return t.stride(1) == 1 and t.shape[1] > 1


def _new_tokens(u: torch.Tensor, length: int) -> torch.Tensor:
    """Uninitialised (Bt, length, K*D) in the memory layout of ``u``."""
    bt, _, kd = u.shape
    if _channel_major(u):
        return u.new_empty(bt, kd, length).transpose(1, 2)
    return u.new_empty(bt, length, kd)


def _new_states(u: torch.Tensor, length: int, nstate: int) -> torch.Tensor:
    """Uninitialised (Bt, length, K*D, N): position-contiguous for channel-major ``u``
    (every chunk operation then reads runs along L), else channel-contiguous."""
    bt, _, kd = u.shape
    if _channel_major(u):
        return u.new_empty(bt, kd, nstate, length).permute(0, 3, 1, 2)
    return u.new_empty(bt, length, kd, nstate)


def _chunks(length: int, chunk: int, reverse: bool = False):
    starts = range(0, length, chunk)
    for start in (reversed(starts) if reverse else starts):
        yield slice(start, min(start + chunk, length))


class _SelectiveScanTokensFn(torch.autograd.Function):
    """u, delta: (Bt, L, K*D), either layout; B, C: (Bt, L, K, N); one dtype.

    Every per-chunk temporary lives in a scratch buffer allocated once per call
    (in the layout of ``u``) and is written with ``out=``: fresh multi-MiB
    temporaries per chunk would be page-faulted in anew each time.
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, delta_bias, delta_softplus, chunk):
        bt, length, kd = u.shape
        groups, nstate = B.shape[2], B.shape[3]
        dim = kd // groups
        chunk = min(chunk, length)
        transform = delta_bias is not None or delta_softplus
        dts = torch.empty_like(delta) if transform else delta  # step sizes, saved
        out = torch.empty_like(u)
        # the states are kept for backward only; without grad one chunk's worth is enough
        keep = any(ctx.needs_input_grad)
        states = _new_states(u, length if keep else chunk, nstate)
        decay_buf, drive_buf = _new_states(u, chunk, nstate), _new_tokens(u, chunk)
        last = None
        for sl in _chunks(length, chunk):
            t = sl.stop - sl.start
            dt, h = dts[:, sl], (states[:, sl] if keep else states[:, :t])
            if delta_bias is not None:
                torch.add(delta[:, sl], delta_bias, out=dt)
            if delta_softplus:
                F.softplus(dt if delta_bias is not None else delta[:, sl], 1, 20, out=dt)
            a = decay_buf[:, :t]
            torch.mul(dt[..., None], A, out=a).exp_()
            dtu = torch.mul(dt, u[:, sl], out=drive_buf[:, :t])
            torch.mul(dtu.view(bt, t, groups, dim, 1), B[:, sl, :, None],
                      out=h.view(bt, t, groups, dim, nstate))
            if last is not None:  # the state carried in from the previous chunk
                h[:, 0].addcmul_(a[:, 0], last)
            linear_scan(a.view(bt, t, -1), h.view(bt, t, -1), out=h.view(bt, t, -1))
            last = h[:, -1] if keep else h[:, -1].clone()  # the scratch gets overwritten
            y = out[:, sl].view(bt, t, groups, dim)
            h5 = h.view(bt, t, groups, dim, nstate)
            if nstate == 1:
                torch.mul(h5[..., 0], C[:, sl, :, None, 0], out=y)
            else:
                torch.mul(h5, C[:, sl, :, None], out=decay_buf[:, :t].view(h5.shape))
                torch.sum(decay_buf[:, :t].view(h5.shape), -1, out=y)
            if D is not None:
                out[:, sl].addcmul_(u[:, sl], D)
        ctx.save_for_backward(u, dts, A, B, C, D, states)
        ctx.delta_softplus, ctx.chunk = delta_softplus, chunk
        ctx.has_bias = delta_bias is not None
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        u, dts, A, B, C, D, states = ctx.saved_tensors
        need = ctx.needs_input_grad
        bt, length, kd = u.shape
        groups, nstate = B.shape[2], B.shape[3]
        dim = kd // groups
        chunk = ctx.chunk
        if grad_out.stride() == u.stride():
            gy_all = grad_out
        else:
            gy_all = torch.empty_like(u).copy_(grad_out)
        du, ddelta = torch.empty_like(u), torch.empty_like(u)
        dA = torch.zeros_like(A) if need[2] else None
        dB = torch.empty_like(B) if need[3] else None
        dC = torch.empty_like(C) if need[4] else None
        dD = torch.zeros_like(D) if D is not None and need[5] else None
        decay_buf, adjoint_buf, product_buf = (_new_states(u, chunk, nstate) for _ in range(3))
        dtu_buf, ddtu_buf, ddt_buf = (_new_tokens(u, chunk) for _ in range(3))
        carry = None  # a[t] * g[t] at the first position of the next chunk
        for sl in _chunks(length, chunk, reverse=True):
            t = sl.stop - sl.start
            dt, u_c, gy, h = dts[:, sl], u[:, sl], gy_all[:, sl], states[:, sl]
            shape5 = (bt, t, groups, dim, nstate)
            gy5 = gy.view(bt, t, groups, dim, 1)
            h5 = h.view(shape5)
            product = product_buf[:, :t].view(shape5)
            a = torch.mul(dt[..., None], A, out=decay_buf[:, :t]).exp_()
            if dC is not None:
                torch.sum(torch.mul(gy5, h5, out=product), 3, out=dC[:, sl])
            # adjoint recurrence: g[t] = dL/dh[t] + a[t + 1] g[t + 1], run backwards in
            # place on dL/dh; the last position takes the carry from the next chunk
            g = adjoint_buf[:, :t]
            torch.mul(gy5, C[:, sl, :, None], out=g.view(shape5))
            if carry is not None:
                g[:, -1] += carry
            if t > 1:
                g[:, -2].addcmul_(a[:, -1], g[:, -1])
                rest = g[:, :-1].view(bt, t - 1, -1)
                linear_scan(a[:, 1:].view(bt, t - 1, -1), rest, out=rest, reverse=True)
            carry = a[:, 0] * g[:, 0]
            g5 = g.view(shape5)
            dtu = torch.mul(dt, u_c, out=dtu_buf[:, :t])
            if dB is not None:
                torch.sum(torch.mul(g5, dtu.view(bt, t, groups, dim, 1), out=product), 3,
                          out=dB[:, sl])
            ddtu = ddtu_buf[:, :t]
            if nstate == 1:
                torch.mul(g5[..., 0], B[:, sl, :, None, 0], out=ddtu.view(bt, t, groups, dim))
            else:
                torch.sum(torch.mul(g5, B[:, sl, :, None], out=product), -1,
                          out=ddtu.view(bt, t, groups, dim))
            # dL/d(dt A)[t] = g[t] a[t] h[t - 1], with h[-1] = 0
            dla = a
            dla[:, 1:].mul_(h[:, :-1])
            if sl.start > 0:
                dla[:, 0].mul_(states[:, sl.start - 1])
            else:
                dla[:, 0] = 0
            dla.mul_(g)
            if dA is not None:
                dA += torch.mul(dla, dt[..., None], out=product_buf[:, :t]).sum((0, 1))
            ddt = ddt_buf[:, :t]
            if nstate == 1:
                torch.mul(dla[..., 0], A[:, 0], out=ddt)
            else:
                torch.sum(torch.mul(dla, A, out=product_buf[:, :t]), -1, out=ddt)
            ddt.addcmul_(ddtu, u_c)  # dL/d dt
            torch.mul(ddtu, dt, out=du[:, sl])
            if D is not None:
                du[:, sl].addcmul_(gy, D)
                if dD is not None:
                    dD += torch.mul(gy, u_c, out=dtu_buf[:, :t]).sum((0, 1))
            if ctx.delta_softplus:
                # d softplus(z) / dz = sigmoid(z) = -expm1(-softplus(z)); expm1 keeps
                # full precision for the small step sizes VMamba starts from
                neg_slope = torch.neg(dt, out=dtu_buf[:, :t]).expm1_()
                if neg_slope.dtype == torch.float64:
                    # F.softplus is the identity above its threshold 20, so its
                    # gradient is exactly 1 there (float32 rounds to 1 anyway)
                    neg_slope.masked_fill_(dt > 20, -1.0)
                torch.mul(ddt, neg_slope, out=ddelta[:, sl]).neg_()
            else:
                ddelta[:, sl] = ddt
        dbias = ddelta.sum((0, 1)) if ctx.has_bias and need[6] else None
        return du, ddelta, dA, dB, dC, dD, dbias, None, None


def _auto_chunk(batch: int, channels: int, nstate: int, length: int) -> int:
    per_position = max(1, batch * channels * nstate)
    chunk = 1 << max(4, (AUTO_CHUNK_ELEMENTS // per_position).bit_length() - 1)
    return min(chunk, length)


def selective_scan_tokens(u: torch.Tensor,
                          delta: torch.Tensor,
                          A: torch.Tensor,
                          B: torch.Tensor,
                          C: torch.Tensor,
                          D: Optional[torch.Tensor] = None,
                          delta_bias: Optional[torch.Tensor] = None,
                          delta_softplus: bool = False,
                          chunk_size: Optional[int] = None) -> torch.Tensor:
    """:func:`selective_scan` on token-major tensors (the PyTorch path only).

    Args:
        u, delta (Tensor): (batch, L, K*D).
        B, C (Tensor): (batch, L, K, N).
        A, D, delta_bias, delta_softplus, chunk_size: As in :func:`selective_scan`.

    Returns:
        Tensor: (batch, L, K*D).
    """
    dtype = torch.float64 if u.dtype == torch.float64 else torch.float32
    batch, length, channels = u.shape
    nstate = A.shape[1]
    if chunk_size is None:
        chunk_size = _auto_chunk(batch, channels, nstate, length)
    elif not (isinstance(chunk_size, int) and chunk_size >= 1):
        raise ValueError(f'selective_scan: chunk_size must be a positive int or None; '
                         f'got {chunk_size!r}')

    def cast(t):
        return None if t is None else t.to(dtype)

    def dense(t):  # token-major or channel-major storage; anything else is copied once
        t = cast(t)
        return t if t.is_contiguous() or t.transpose(1, 2).is_contiguous() else t.contiguous()

    return _SelectiveScanTokensFn.apply(dense(u), dense(delta), cast(A), cast(B), cast(C),
                                        cast(D), cast(delta_bias), bool(delta_softplus),
                                        int(chunk_size))


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
            per scratch buffer). None picks about 2**21 state elements per chunk.
        backend (str): 'auto' (a CUDA kernel for CUDA tensors when
            ``selective_scan_cuda_oflex``, ``selective_scan_cuda`` or
            ``mamba_ssm`` is importable, else PyTorch), 'torch' or 'cuda'.

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
                              delta_softplus, chunk_size)
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
