"""Optional CUDA kernels behind :func:`selective_scan` (never needed, used when present).

Looked up lazily, in VMamba's order of preference: ``selective_scan_cuda_oflex``
(VMamba's kernel), ``selective_scan_cuda`` (Mamba's, also installed by
``mamba_ssm``), then ``mamba_ssm``'s Python interface. None of them is a
dependency of this package.
"""
import importlib
from functools import lru_cache

import torch

__all__ = ['cuda_backend_available', 'selective_scan_cuda']


@lru_cache(maxsize=None)
def _find_kernel():
    """(name, module or function) of the first importable kernel, or (None, None)."""
    for name in ('selective_scan_cuda_oflex', 'selective_scan_cuda'):
        try:
            return name, importlib.import_module(name)
        except Exception:  # a broken build raises anything from ImportError to OSError
            continue
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
        return 'mamba_ssm', selective_scan_fn
    except Exception:
        return None, None


def cuda_backend_available() -> bool:
    """Whether a CUDA selective-scan kernel can be imported (and CUDA is usable)."""
    return torch.cuda.is_available() and _find_kernel()[0] is not None


class _OflexFn(torch.autograd.Function):

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, delta_bias, delta_softplus):
        kernel = _find_kernel()[1]
        # nrows=1, oflex=True: float32 output whatever the input dtype
        out, x, *_ = kernel.fwd(u, delta, A, B, C, D, delta_bias, delta_softplus, 1, True)
        ctx.save_for_backward(u, delta, A, B, C, D, delta_bias, x)
        ctx.delta_softplus = delta_softplus
        return out

    @staticmethod
    def backward(ctx, dout):
        u, delta, A, B, C, D, delta_bias, x = ctx.saved_tensors
        kernel = _find_kernel()[1]
        du, ddelta, dA, dB, dC, dD, dbias, *_ = kernel.bwd(
            u, delta, A, B, C, D, delta_bias, dout.contiguous(), x, ctx.delta_softplus, 1)
        return du, ddelta, dA, dB, dC, dD, dbias, None


class _MambaFn(torch.autograd.Function):

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, delta_bias, delta_softplus):
        kernel = _find_kernel()[1]
        out, x, *_ = kernel.fwd(u, delta, A, B, C, D, None, delta_bias, delta_softplus)
        ctx.save_for_backward(u, delta, A, B, C, D, delta_bias, x)
        ctx.delta_softplus = delta_softplus
        return out

    @staticmethod
    def backward(ctx, dout):
        u, delta, A, B, C, D, delta_bias, x = ctx.saved_tensors
        kernel = _find_kernel()[1]
        du, ddelta, dA, dB, dC, dD, dbias, *_ = kernel.bwd(
            u, delta, A, B, C, D, None, delta_bias, dout.contiguous(), x, None, None,
            ctx.delta_softplus, False)
        return du, ddelta, dA, dB, dC, dD, dbias, None


def selective_scan_cuda(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=False):
    """Run the first available CUDA kernel; same interface as ``selective_scan``."""
    name, kernel = _find_kernel()
    u, delta, B, C = (t.contiguous() for t in (u, delta, B, C))
    # the kernels read A, D and delta_bias as float32
    A = A.float().contiguous()
    D = None if D is None else D.float().contiguous()
    delta_bias = None if delta_bias is None else delta_bias.float().contiguous()
    if name == 'selective_scan_cuda_oflex':
        return _OflexFn.apply(u, delta, A, B, C, D, delta_bias, bool(delta_softplus))
    if name == 'selective_scan_cuda':
        return _MambaFn.apply(u, delta, A, B, C, D, delta_bias, bool(delta_softplus)).float()
    return kernel(u, delta, A, B, C, D, None, delta_bias, bool(delta_softplus)).float()
