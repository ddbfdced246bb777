"""Linear recurrences ``h[t] = a[t] h[t - 1] + b[t]`` solved without a loop over positions.

The building blocks of the PyTorch selective scan (:mod:`.torch_scan`): a
pairwise prefix scan for any decays, and for decays in (0, 1] a closed form
over short blocks (running products and sums along contiguous rows) with its
adjoint, used while the running products stay far from underflow.
"""
from typing import Optional

import torch

__all__ = ['linear_scan', 'closed_form_scan', 'closed_form_adjoint', 'CLOSED_FORM_BLOCK']

#: Positions per block of the closed-form scan.
CLOSED_FORM_BLOCK = 16
#: A block whose product of decays falls below this goes to the prefix scan: its
#: running products would lose precision, then underflow.
_TINY = {torch.float32: 1e-18, torch.float64: 1e-150}


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


def closed_form_scan(a: torch.Tensor, b: torch.Tensor, scratch: torch.Tensor,
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


def closed_form_adjoint(a: torch.Tensor, g: torch.Tensor, carry: Optional[torch.Tensor],
                         scratch: torch.Tensor, sums: torch.Tensor, block: int) -> bool:
    """``g[t] += a[t + 1] * g[t + 1]`` run backwards, in closed form per block.

    The reverse of :func:`closed_form_scan`: with ``P = cumprod(a)`` per block,
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
