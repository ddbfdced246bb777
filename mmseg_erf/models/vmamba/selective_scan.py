"""Selective scan (the S6 recurrence of Mamba/VMamba) in pure PyTorch.

For every channel ``c`` of group ``k`` (c in k*D .. k*D + D - 1) and state ``n``::

    dt[t]   = softplus(delta[t] + delta_bias)        (softplus, bias optional)
    h[n, t] = exp(dt[t] * A[n]) * h[n, t - 1] + dt[t] * B[k, n, t] * u[t]
    y[t]    = sum_n C[k, n, t] * h[n, t] + D * u[t]

VMamba's pure-PyTorch fallback loops over every position (about a minute and
a half per 512x512 ERF of VMamba-T on 2 CPU cores). Here the work runs tile
by tile: a block of channels times a chunk of ``chunk_size`` positions, the
state carried from one chunk to the next. Inside a tile the recurrence
``h[t] = a[t] h[t-1] + b[t]`` is solved without a loop over positions:

* by a parallel prefix scan (pairwise reduction, log2(chunk) vectorised
  levels) that only multiplies decays ``a = exp(dt * A)`` in (0, 1], so
  nothing overflows whatever the step sizes and float32 keeps ~1e-7 relative
  accuracy;
* or, for channel-major tiles with decays in (0, 1] (softplus step sizes and
  A <= 0, the Mamba/VMamba case), in closed form over blocks of 16 positions:
  running products and sums along memory-contiguous rows, a few passes
  instead of log2(chunk) strided levels. A block whose running product would
  come near underflow falls back to the prefix scan, so strong decays stay
  exact.

Work runs in the layout the inputs come in: channel-major (batch, K*D, L)
from :func:`selective_scan` (no transposing copies) or token-major (batch, L,
K*D) from :func:`selective_scan_tokens`, which the VMamba block uses. A
token-major tile takes every channel and a chunk of positions (a contiguous
slab); a channel-major tile takes a few channels of one direction over the
whole sequence (a contiguous run per channel), because reading short runs
from many rows is what made channel-major chunks slow. The states and the
scratch buffers follow the layout, and the scratch buffers are allocated once
per call. The backward pass is written out (the adjoint recurrence is the
same scan run backwards): autograd keeps only the inputs, the step sizes and
the states.
"""
from typing import Optional

import torch
import torch.nn.functional as F

from .cuda_scan import cuda_backend_available, selective_scan_cuda

__all__ = ['selective_scan', 'selective_scan_tokens', 'selective_scan_reference', 'linear_scan']

#: Target number of state elements (batch x positions x channels x N) per tile
#: when chunk_size is None: 4 MiB per float32 scratch buffer, i.e. 2048
#: positions x 384 channels (token-major) or 48 channels x 16384 positions
#: (channel-major) at VMamba-T's stage-1 shape. Measured there on 2 cores,
#: 1 << 20 beats 1 << 21 and matches 1 << 19.
AUTO_CHUNK_ELEMENTS = 1 << 20
#: Positions per block of the closed-form scan.
_CLOSED_FORM_BLOCK = 16
#: A block whose product of decays falls below this goes to the prefix scan: its
#: running products would lose precision, then underflow.
_TINY = {torch.float32: 1e-18, torch.float64: 1e-150}
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


def _block_products(a: torch.Tensor, scratch: torch.Tensor, block: int):
    """Running products of the decays inside each block of ``block`` positions,
    written to ``scratch`` as (Bt, blocks, block, C), and the block totals
    (Bt, blocks, C); None when L is not a multiple of ``block`` or a block's
    total falls below ``_TINY``."""
    length = a.shape[1]
    if length % block:
        return None
    shape = (length // block, block)
    prods = torch.cumprod(a.unflatten(1, shape), 2, out=scratch.unflatten(1, shape))
    # clone() keeps the position-fastest order (.contiguous() would gather across rows)
    ends = prods[:, :, -1].clone()
    if ends.amin().item() < _TINY[a.dtype]:
        return None
    return prods, ends


def _closed_form_scan(a: torch.Tensor, b: torch.Tensor, scratch: torch.Tensor,
                      block: int) -> bool:
    """``linear_scan(a, b, out=b)`` for decays in (0, 1], in closed form per block.

    Inside each block of ``block`` positions, ``h[t] = P[t] * cumsum(b / P)[t]``
    with ``P = cumprod(a)``; the block ends are chained by a short
    :func:`linear_scan`. A few passes along contiguous rows (channel-major)
    instead of the log2(L) strided levels of the pairwise scan. ``P[t] / P[s]``
    carries the rounding of the steps between s and t only (both come from one
    running product), so the accuracy is that of the sequential recurrence as
    long as ``P`` stays far from underflow.

    Args:
        a (Tensor): Decays in (0, 1], (Bt, L, C).
        b (Tensor): Inputs, same shape; overwritten with the states.
        scratch (Tensor): The shape of ``a``, for the running products.
        block (int): Positions per block.

    Returns:
        bool: False (and ``b`` untouched) when L is not a multiple of ``block``
        or a block's decays multiply to less than ``_TINY`` (strongly decaying
        steps): use :func:`linear_scan`.
    """
    products = _block_products(a, scratch, block)
    if products is None:
        return False
    prods, ends = products
    hb = b.unflatten(1, prods.shape[1:3])
    hb.div_(prods).cumsum_(2)
    if ends.shape[1] > 1:
        carried = linear_scan(ends, hb[:, :, -1] * ends)
        hb[:, 1:] += carried[:, :-1, None]
    hb.mul_(prods)
    return True


def _closed_form_adjoint(a: torch.Tensor, g: torch.Tensor, carry: Optional[torch.Tensor],
                         scratch: torch.Tensor, sums: torch.Tensor, block: int) -> bool:
    """``g[t] += a[t + 1] * g[t + 1]`` run backwards, in closed form per block.

    The reverse of :func:`_closed_form_scan`: with ``P = cumprod(a)`` per block,
    ``g[t] = (sum_{s >= t} P[s] g[s] + P[end] E) / P[t]``, where ``E`` comes in
    from the next block (``carry`` for the last one) and the suffix sums are
    one matrix product with a triangular matrix of ones (cumsum has no reverse
    and ``total - prefix`` would cancel catastrophically). Channel-major only:
    the blocks must be contiguous rows.

    Args:
        a (Tensor): Decays in (0, 1], (Bt, L, C) stored as (Bt, C, L).
        g (Tensor): dL/dh, same shape and storage; overwritten with the adjoint.
        carry (Tensor, optional): ``a[L] * g[L]`` from the positions after L, (Bt, C).
        scratch, sums (Tensor): Dense (Bt, L, C) buffers stored like ``g``.
        block (int): Positions per block.

    Returns:
        bool: False (and ``g`` untouched) when the layout does not allow it, L is
        not a multiple of ``block`` or a block decays below ``_TINY``.
    """
    rows, sum_rows = g.transpose(1, 2), sums.transpose(1, 2)
    if not (rows.is_contiguous() and sum_rows.is_contiguous()):
        return False
    products = _block_products(a, scratch, block)
    if products is None:
        return False
    prods, ends = products
    gb = g.unflatten(1, prods.shape[1:3])
    gb.mul_(prods)
    suffix = torch.ones(block, block, dtype=g.dtype, device=g.device).tril_()
    torch.mm(rows.view(-1, block), suffix, out=sum_rows.view(-1, block))
    sb = sums.unflatten(1, prods.shape[1:3])
    # what enters block j from the right: E[j] = P_end[j + 1] E[j + 1] + S[j + 1, start]
    decay, inflow = torch.zeros_like(ends), torch.empty_like(ends)
    decay[:, :-1] = ends[:, 1:]
    inflow[:, :-1] = sb[:, 1:, 0]
    inflow[:, -1] = 0 if carry is None else carry
    entering = linear_scan(decay, inflow, reverse=True)
    sb += (ends * entering)[:, :, None]
    torch.div(sb, prods, out=gb)
    return True


def _channel_major(t: torch.Tensor) -> bool:
    """(Bt, L, K*D) stored as (Bt, K*D, L): the layout of :func:`selective_scan`'s inputs."""
    return t.stride(1) == 1 and t.shape[1] > 1


def _new_tokens(u: torch.Tensor, length: int, width: int) -> torch.Tensor:
    """Uninitialised (Bt, length, width) in the memory layout of ``u``."""
    if _channel_major(u):
        return u.new_empty(u.shape[0], width, length).transpose(1, 2)
    return u.new_empty(u.shape[0], length, width)


def _new_states(u: torch.Tensor, length: int, width: int, nstate: int) -> torch.Tensor:
    """Uninitialised (Bt, length, width, N): position-contiguous for channel-major ``u``
    (every operation then reads runs along L), else channel-contiguous."""
    if _channel_major(u):
        return u.new_empty(u.shape[0], width, nstate, length).permute(0, 3, 1, 2)
    return u.new_empty(u.shape[0], length, width, nstate)


def _closed_form_applies(u: torch.Tensor, A: torch.Tensor, delta_softplus: bool) -> bool:
    """Channel-major tiles with decays in (0, 1]: softplus step sizes (>= 0) and
    A <= 0, as in Mamba and VMamba."""
    return _channel_major(u) and delta_softplus and bool((A <= 0).all())


def _tile_width(u: torch.Tensor, dim: int, chunk: int, nstate: int) -> int:
    """Channels per tile: all of them for token-major ``u``; for channel-major ``u``
    the widest divisor of D (a tile stays inside one direction) whose
    (width x chunk x N) state fits AUTO_CHUNK_ELEMENTS. A channel-major tile is
    then one contiguous run of memory per channel, which the caches stream."""
    kd = u.shape[2]
    if not _channel_major(u):
        return kd
    fits = max(1, AUTO_CHUNK_ELEMENTS // max(1, u.shape[0] * chunk * nstate))
    return max(w for w in range(1, dim + 1) if dim % w == 0 and w <= fits)


def _tiles(length: int, chunk: int, kd: int, width: int, reverse: bool = False):
    """(channel slice, position slice): channel blocks, each cut into position
    chunks in scan order (the state carries along them)."""
    starts = range(0, length, chunk)
    for c0 in range(0, kd, width):
        for start in (reversed(starts) if reverse else starts):
            yield slice(c0, c0 + width), slice(start, min(start + chunk, length))


class _Tile:
    """Shapes and parameter slices of one tile (channels ``cs``, positions ``ps``)."""

    def __init__(self, cs: slice, ps: slice, dim: int, A, B, C, D, delta_bias):
        self.cs, self.ps = cs, ps
        self.length = ps.stop - ps.start
        gs = slice(cs.start // dim, (cs.stop - 1) // dim + 1)  # the directions it spans
        self.groups = gs.stop - gs.start
        self.dim = (cs.stop - cs.start) // self.groups
        self.gs = gs
        self.A, self.B, self.C = A[cs], B[:, ps, gs], C[:, ps, gs]
        self.D = None if D is None else D[cs]
        self.delta_bias = None if delta_bias is None else delta_bias[cs]

    def grouped(self, t: torch.Tensor) -> torch.Tensor:
        """(Bt, L, width[, N]) -> (Bt, L, groups, dim, N or 1)."""
        bt, length = t.shape[:2]
        return t.view(bt, length, self.groups, self.dim, -1)


def _tile_states(tile: _Tile, a: torch.Tensor, dtu: torch.Tensor,
                 entering: Optional[torch.Tensor], h: torch.Tensor,
                 prod_buf: Optional[torch.Tensor], closed_form: bool) -> torch.Tensor:
    """The states of one tile, written to ``h``: ``h[t] = a[t] h[t - 1] + dtu[t] B[t]``
    from ``entering`` (the state before the tile; None: zero).

    Args:
        tile (_Tile): Its shapes and parameter slices.
        a (Tensor): Decays exp(dt A), (Bt, t, width, N).
        dtu (Tensor): dt * u, (Bt, t, width).
        entering (Tensor, optional): (Bt, width, N).
        h (Tensor): Output, (Bt, t, width, N).
        prod_buf (Tensor, optional): Scratch of the closed form, (Bt, chunk, width, N).
        closed_form (bool): Try the closed form first.
    """
    bt, t = h.shape[:2]
    torch.mul(tile.grouped(dtu), tile.B[:, :, :, None], out=tile.grouped(h))
    if entering is not None:  # the state carried in from the previous chunk
        h[:, 0].addcmul_(a[:, 0], entering)
    a2, h2 = a.view(bt, t, -1), h.view(bt, t, -1)
    if not (closed_form and _closed_form_scan(
            a2, h2, prod_buf[:, :t].view(bt, t, -1), _CLOSED_FORM_BLOCK)):
        linear_scan(a2, h2, out=h2)
    return h


class _SelectiveScanTokensFn(torch.autograd.Function):
    """u, delta: (Bt, L, K*D), either layout; B, C: (Bt, L, K, N); one dtype.

    The work runs tile by tile (a block of channels x a chunk of positions).
    Every per-tile temporary lives in a scratch buffer allocated once per call
    (in the layout of ``u``) and is written with ``out=``: fresh multi-MiB
    temporaries per tile would be page-faulted in anew each time.
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, delta_bias, delta_softplus, chunk):
        bt, length, kd = u.shape
        groups, nstate = B.shape[2], B.shape[3]
        dim = kd // groups
        chunk = min(chunk, length)
        width = _tile_width(u, dim, chunk, nstate)
        transform = delta_bias is not None or delta_softplus
        dts = torch.empty_like(delta) if transform else delta  # step sizes, saved
        out = torch.empty_like(u)
        # The states are kept for backward only, and in full only when they are no larger
        # than u (N = 1): with N states per channel (16 in the first VMamba generation)
        # they would be N times the inputs, so the backward recomputes each tile's
        # states from the state entering it, the only states kept then.
        keep = any(ctx.needs_input_grad)
        full = keep and nstate == 1
        states = _new_states(u, length, kd, nstate) if full else None
        entering = {}  # (channel start, position start) -> state entering that tile
        decay_buf, drive_buf = _new_states(u, chunk, width, nstate), _new_tokens(u, chunk, width)
        closed_form = _closed_form_applies(u, A, delta_softplus)
        prod_buf = _new_states(u, chunk, width, nstate) if closed_form else None
        state_buf = None if full else _new_states(u, chunk, width, nstate)
        last = None
        for cs, ps in _tiles(length, chunk, kd, width):
            tile = _Tile(cs, ps, dim, A, B, C, D, delta_bias)
            t = tile.length
            if ps.start == 0:
                last = None  # a new block of channels starts from the zero state
            if keep and not full:
                entering[cs.start, ps.start] = last
            dt, u_t = dts[:, ps, cs], u[:, ps, cs]
            h = states[:, ps, cs] if full else state_buf[:, :t]
            z = delta[:, ps, cs]
            if delta_bias is not None:  # in scratch when softplus follows: dts is written once
                z = torch.add(z, tile.delta_bias, out=drive_buf[:, :t] if delta_softplus else dt)
            if delta_softplus:
                F.softplus(z, 1, 20, out=dt)
            a = decay_buf[:, :t]
            torch.mul(dt[..., None], tile.A, out=a).exp_()
            dtu = torch.mul(dt, u_t, out=drive_buf[:, :t])
            _tile_states(tile, a, dtu, last, h, prod_buf, closed_form)
            last = h[:, -1] if full else h[:, -1].clone()  # the scratch gets overwritten
            # y = sum_n C h + D u, built in scratch so that ``out`` is written once
            y = tile.grouped(out[:, ps, cs])[..., 0]
            h5 = tile.grouped(h)
            skip = None if D is None else tile.grouped(torch.mul(u_t, tile.D, out=dtu))[..., 0]
            if nstate == 1:
                h_c = (h5[..., 0], tile.C[:, :, :, None, 0])
                torch.mul(*h_c, out=y) if skip is None else torch.addcmul(skip, *h_c, out=y)
            else:
                product = torch.mul(h5, tile.C[:, :, :, None], out=tile.grouped(a))
                torch.sum(product, -1, out=y)
                if skip is not None:
                    y += skip
        ctx.save_for_backward(u, dts, A, B, C, D, states)
        ctx.delta_softplus, ctx.chunk = delta_softplus, chunk
        # the backward walks the same tiles and takes the same closed form
        ctx.width, ctx.closed_form = width, closed_form
        ctx.has_bias = delta_bias is not None
        ctx.entering = entering
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        u, dts, A, B, C, D, states = ctx.saved_tensors
        need = ctx.needs_input_grad
        bt, length, kd = u.shape
        groups, nstate = B.shape[2], B.shape[3]
        dim = kd // groups
        chunk, width = ctx.chunk, ctx.width
        if grad_out.stride() == u.stride():
            gy_all = grad_out
        else:
            gy_all = torch.empty_like(u).copy_(grad_out)
        du, ddelta = torch.empty_like(u), torch.empty_like(u)
        dA = torch.zeros_like(A) if need[2] else None
        # several channel blocks of one direction add to the same dB, dC entries
        dB = torch.zeros_like(B) if need[3] else None
        dC = torch.zeros_like(C) if need[4] else None
        dD = torch.zeros_like(D) if D is not None and need[5] else None
        dbias = u.new_zeros(kd) if ctx.has_bias and need[6] else None
        decay_buf, adjoint_buf, product_buf = (
            _new_states(u, chunk, width, nstate) for _ in range(3))
        state_buf = _new_states(u, chunk, width, nstate) if states is None else None
        closed_form = ctx.closed_form
        prod_buf = _new_states(u, chunk, width, nstate) if closed_form else None
        dtu_buf, ddtu_buf, ddt_buf = (_new_tokens(u, chunk, width) for _ in range(3))
        carry = None  # a[t] * g[t] at the first position of the next chunk
        for cs, ps in _tiles(length, chunk, kd, width, reverse=True):
            tile = _Tile(cs, ps, dim, A, B, C, D, None)
            t = tile.length
            if ps.stop == length:
                carry = None  # a new block of channels: nothing comes after its end
            dt, u_t, gy = dts[:, ps, cs], u[:, ps, cs], gy_all[:, ps, cs]
            a = torch.mul(dt[..., None], tile.A, out=decay_buf[:, :t]).exp_()
            if states is None:  # the forward's states of this tile, again
                previous = ctx.entering[cs.start, ps.start]
                h = _tile_states(tile, a, torch.mul(dt, u_t, out=dtu_buf[:, :t]), previous,
                                 state_buf[:, :t], prod_buf, closed_form)
            else:
                h = states[:, ps, cs]
                previous = states[:, ps.start - 1, cs] if ps.start > 0 else None
            gy5, h5 = tile.grouped(gy), tile.grouped(h)
            product = tile.grouped(product_buf[:, :t])
            if dC is not None:
                dC[:, ps, tile.gs] += torch.mul(gy5, h5, out=product).sum(3)
            # adjoint recurrence: g[t] = dL/dh[t] + a[t + 1] g[t + 1], run backwards in
            # place on dL/dh; the last position takes the carry from the next chunk
            g = adjoint_buf[:, :t]
            torch.mul(gy5, tile.C[:, :, :, None], out=tile.grouped(g))
            if not (closed_form and _closed_form_adjoint(
                    a.view(bt, t, -1), g.view(bt, t, -1),
                    None if carry is None else carry.view(bt, -1),
                    prod_buf[:, :t].view(bt, t, -1), product.view(bt, t, -1),
                    _CLOSED_FORM_BLOCK)):
                if carry is not None:
                    g[:, -1] += carry
                if t > 1:
                    g[:, -2].addcmul_(a[:, -1], g[:, -1])
                    rest = g[:, :-1].view(bt, t - 1, -1)
                    linear_scan(a[:, 1:].view(bt, t - 1, -1), rest, out=rest, reverse=True)
            carry = a[:, 0] * g[:, 0]
            g5 = tile.grouped(g)
            dtu = torch.mul(dt, u_t, out=dtu_buf[:, :t])
            if dB is not None:
                dB[:, ps, tile.gs] += torch.mul(g5, tile.grouped(dtu), out=product).sum(3)
            ddtu = ddtu_buf[:, :t]
            if nstate == 1:
                torch.mul(g5[..., 0], tile.B[:, :, :, None, 0], out=tile.grouped(ddtu)[..., 0])
            else:
                torch.sum(torch.mul(g5, tile.B[:, :, :, None], out=product), -1,
                          out=tile.grouped(ddtu)[..., 0])
            # dL/d(dt A)[t] = g[t] a[t] h[t - 1], with h[-1] = 0
            dla = a
            dla[:, 1:].mul_(h[:, :-1])
            if previous is not None:
                dla[:, 0].mul_(previous)
            else:
                dla[:, 0] = 0
            dla.mul_(g)
            if dA is not None:
                dA[cs] += torch.mul(dla, dt[..., None], out=product_buf[:, :t]).sum((0, 1))
            ddt = ddt_buf[:, :t]
            if nstate == 1:
                torch.mul(dla[..., 0], tile.A[:, 0], out=ddt)
            else:
                torch.sum(torch.mul(dla, tile.A, out=product_buf[:, :t]), -1, out=ddt)
            ddt.addcmul_(ddtu, u_t)  # dL/d dt
            # the full-size gradients are written once each, from scratch
            if D is not None:
                skip = torch.mul(gy, tile.D, out=dtu_buf[:, :t])
                torch.addcmul(skip, ddtu, dt, out=du[:, ps, cs])
                if dD is not None:
                    dD[cs] += torch.mul(gy, u_t, out=ddtu).sum((0, 1))
            else:
                torch.mul(ddtu, dt, out=du[:, ps, cs])
            if ctx.delta_softplus:
                # d softplus(z) / dz = sigmoid(z) = -expm1(-dt), from the saved step
                # sizes: keeping z too would hold one more (L, K*D) tensor per scan until
                # backward. expm1 keeps full precision for the small step sizes VMamba
                # starts from.
                slope = torch.neg(dt, out=dtu_buf[:, :t]).expm1_().neg_()
                if slope.dtype == torch.float64:
                    # F.softplus is the identity above its threshold 20, so its
                    # gradient is exactly 1 there (float32 rounds to 1 anyway)
                    slope.masked_fill_(dt > 20, 1.0)
                torch.mul(ddt, slope, out=ddelta[:, ps, cs])
            else:
                ddelta[:, ps, cs] = ddt
            if dbias is not None:  # summed while the tile is still in cache
                dbias[cs] += ddelta[:, ps, cs].sum((0, 1))
        return du, ddelta, dA, dB, dC, dD, dbias, None, None


def _auto_chunk(u: torch.Tensor, nstate: int) -> int:
    """Positions per chunk: about AUTO_CHUNK_ELEMENTS states per tile (a power of 2).
    Channel-major tiles are narrow instead (see _tile_width), so they take the whole
    sequence when one channel's states fit."""
    batch, length, channels = u.shape
    per_position = max(1, batch * nstate * (1 if _channel_major(u) else channels))
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
    if chunk_size is not None and not (isinstance(chunk_size, int) and chunk_size >= 1):
        raise ValueError(f'selective_scan: chunk_size must be a positive int or None; '
                         f'got {chunk_size!r}')

    def cast(t):
        return None if t is None else t.to(dtype)

    def dense(t):  # token-major or channel-major storage; anything else is copied once
        t = cast(t)
        return t if t.is_contiguous() or t.transpose(1, 2).is_contiguous() else t.contiguous()

    u, delta = dense(u), dense(delta)
    if chunk_size is None:
        chunk_size = _auto_chunk(u, nstate)
    return _SelectiveScanTokensFn.apply(u, delta, cast(A), cast(B), cast(C), cast(D),
                                        cast(delta_bias), bool(delta_softplus), int(chunk_size))


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
