"""The selective scan in PyTorch operations, tile by tile.

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

from .prefix_scan import CLOSED_FORM_BLOCK, closed_form_adjoint, closed_form_scan, linear_scan

__all__ = ['torch_scan_tokens', 'AUTO_CHUNK_ELEMENTS']

#: Target number of state elements (batch x positions x channels x N) per tile
#: when chunk_size is None: 4 MiB per float32 scratch buffer, i.e. 2048
#: positions x 384 channels (token-major) or 48 channels x 16384 positions
#: (channel-major) at VMamba-T's stage-1 shape. Measured there on 2 cores,
#: 1 << 20 beats 1 << 21 and matches 1 << 19.
AUTO_CHUNK_ELEMENTS = 1 << 20


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
    if not (closed_form and closed_form_scan(
            a2, h2, prod_buf[:, :t].view(bt, t, -1), CLOSED_FORM_BLOCK)):
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
            if not (closed_form and closed_form_adjoint(
                    a.view(bt, t, -1), g.view(bt, t, -1),
                    None if carry is None else carry.view(bt, -1),
                    prod_buf[:, :t].view(bt, t, -1), product.view(bt, t, -1),
                    CLOSED_FORM_BLOCK)):
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


#: From this many states per channel on, channel-major inputs are copied token-major first:
#: the states, not the inputs, are then what the passes move, and token-major tiles move
#: them twice as fast (d_state 16, VMamba-T stage 1, channel-major inputs: 1.55 s with the
#: copies against 3.17 s without, 2 threads).
TOKEN_MAJOR_FROM_STATES = 8


def torch_scan_tokens(u, delta, A, B, C, D, delta_bias, delta_softplus: bool,
                      chunk_size: Optional[int]) -> torch.Tensor:
    """The PyTorch path of :func:`.selective_scan.selective_scan_tokens`, on inputs
    already cast to one dtype and stored token- or channel-major."""
    if A.shape[1] >= TOKEN_MAJOR_FROM_STATES and _channel_major(u):
        u, delta, B, C = u.contiguous(), delta.contiguous(), B.contiguous(), C.contiguous()
    if chunk_size is None:
        chunk_size = _auto_chunk(u, A.shape[1])
    return _SelectiveScanTokensFn.apply(u, delta, A, B, C, D, delta_bias, bool(delta_softplus),
                                        int(chunk_size))
