"""The compiled CPU selective scan (``cpu_scan.c``): built once, loaded by ctypes.

The pure-PyTorch scan is bound by memory traffic: with N states per channel
(16 in the first VMamba generation) every pass over the states moves N times
the inputs. The C kernel keeps a slice's states in cache while it walks the
positions once, so its cost is mostly the arithmetic. It is compiled at first
use with the system's C compiler (``$CC``, else ``cc``/``gcc``/``clang``; the
same toolchain that builds mmcv), depends on libm only, and is cached under
``~/.cache/mmseg-erf/kernels`` keyed by its source, the flags, the compiler
and the processor. Without a compiler, :func:`cpu_kernel_available` is False
and callers use the PyTorch path; ``MMSEG_ERF_CPU_KERNEL=0`` turns it off.

ctypes releases the GIL for each call, so the work items run on a small pool
of Python threads, ``torch.get_num_threads()`` of them: no second OpenMP
runtime is loaded next to torch's.
"""
import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

__all__ = ['cpu_kernel_available', 'cpu_kernel_applies', 'cpu_kernel_error', 'cpu_kernel_scan']

SOURCE = Path(__file__).with_name('cpu_scan.c')
FLAGS = ('-O3', '-march=native', '-fopenmp-simd', '-fno-math-errno', '-fPIC', '-shared')
MAX_STATE, CHUNK = 64, 32  # as in cpu_scan.c
_DTYPES = {torch.float32: ('f32', ()), torch.float64: ('f64', ('-DSCAN_DOUBLE', '-DSCAN_REAL=double'))}
_POINTER = ctypes.c_void_p
_INT = ctypes.c_int64


def _compiler() -> Optional[str]:
    named = os.environ.get('CC')
    if named:
        return shutil.which(named)
    return next((found for found in map(shutil.which, ('cc', 'gcc', 'clang')) if found), None)


def _processor() -> str:
    """What -march=native compiles for: a cache shared across machines must not mix builds."""
    try:
        flags = next(line for line in Path('/proc/cpuinfo').read_text().splitlines()
                     if line.startswith(('flags', 'Features')))
    except (OSError, StopIteration):
        flags = ''
    return f'{platform.machine()} {flags}'


def _cache_dir() -> Path:
    root = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    return Path(root) / 'mmseg-erf' / 'kernels'


def _build(compiler: str, suffix: str, defines) -> Path:
    version = subprocess.run([compiler, '--version'], capture_output=True, text=True).stdout
    key = hashlib.sha256('\0'.join((SOURCE.read_text(), ' '.join(FLAGS + defines), version,
                                    _processor())).encode()).hexdigest()[:16]
    target = _cache_dir() / f'cpu_scan_{suffix}_{key}.so'
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # built beside the target and renamed: concurrent first runs never load a half-written file
    fd, partial = tempfile.mkstemp(suffix='.so', dir=target.parent)
    os.close(fd)
    try:
        done = subprocess.run([compiler, *FLAGS, *defines, str(SOURCE), '-o', partial, '-lm'],
                              capture_output=True, text=True)
        if done.returncode:
            raise OSError(f'{compiler} failed on {SOURCE.name}: {done.stderr.strip()[-500:]}')
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return target


@lru_cache(maxsize=None)
def _library(dtype: torch.dtype):
    """(ctypes library, None) or (None, the reason it could not be had)."""
    if os.environ.get('MMSEG_ERF_CPU_KERNEL', '1') == '0':
        return None, 'MMSEG_ERF_CPU_KERNEL=0'
    compiler = _compiler()
    if compiler is None:
        return None, 'no C compiler (set CC, or install gcc)'
    suffix, defines = _DTYPES[dtype]
    try:
        lib = ctypes.CDLL(str(_build(compiler, suffix, defines)))
    except OSError as error:
        return None, str(error)
    lib.scan_forward.argtypes = [_POINTER] * 6 + [_INT] * 6 + [_POINTER] * 2 + [_INT] * 2
    lib.scan_backward.argtypes = [_POINTER] * 6 + [_INT] * 6 + [_POINTER] * 8 + [_INT] * 2
    lib.scan_forward.restype = lib.scan_backward.restype = ctypes.c_int
    return lib, None


def cpu_kernel_error(dtype: torch.dtype = torch.float32) -> Optional[str]:
    """Why the kernel is not available for ``dtype`` (None when it is)."""
    if dtype not in _DTYPES:
        return f'dtype {dtype} (the kernel takes float32 and float64)'
    return _library(dtype)[1]


def cpu_kernel_available(dtype: torch.dtype = torch.float32) -> bool:
    """Whether the compiled scan can run on CPU tensors of ``dtype`` (builds it once)."""
    return cpu_kernel_error(dtype) is None


@lru_cache(maxsize=4)
def _pool(workers: int, pid: int) -> ThreadPoolExecutor:
    """One pool per size and process: a forked child (a dataloader worker, a launcher's
    rank) inherits the parent's pool object but none of its threads."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix='mmseg-erf-scan')


def _run(function, args, items: int) -> None:
    """Call ``function(*args, begin, end)`` over [0, items), split between the threads."""
    workers = max(1, min(torch.get_num_threads(), items))
    bounds = [items * i // workers for i in range(workers + 1)]
    ranges = [(lo, hi) for lo, hi in zip(bounds, bounds[1:]) if hi > lo]
    if len(ranges) == 1:
        codes = [function(*args, 0, items)]
    else:
        codes = list(_pool(workers, os.getpid()).map(lambda r: function(*args, *r), ranges))
    if any(codes):
        raise RuntimeError(f'cpu_scan.c returned {codes}: N above {MAX_STATE} or out of memory')


def _ptr(t: Optional[torch.Tensor]):
    return None if t is None else t.data_ptr()


#: Bytes of the backward's two per-item buffers (CHUNK x N x width states and decays):
#: they stay in a core's L2. Wider items read B and C fewer times and u, dt in longer
#: runs (d_state 16, one thread: 192 channels 20 % faster than 64, 45 % faster than 32).
ITEM_BYTES = 768 << 10


def _slices(dim: int, groups: int, nstate: int, itemsize: int) -> int:
    """Slices of each direction's channels, one work item each: a multiple of 8 channels
    per slice (cpu_scan.c), the widest within ITEM_BYTES that gives every thread an item."""
    counts = [c for c in range(1, dim + 1) if dim % c == 0 and (dim // c) % 8 == 0]
    fit = [c for c in counts if 2 * CHUNK * nstate * (dim // c) * itemsize <= ITEM_BYTES]
    fit = fit or counts[-1:]
    threads = torch.get_num_threads()
    return next((c for c in fit if groups * c >= threads), fit[-1])


class _CpuScanFn(torch.autograd.Function):
    """u, delta: (batch, L, K*D) token-major contiguous; A: (K*D, N), A <= 0;
    B, C: (batch, L, K, N) contiguous; D, delta_bias: (K*D,) or None.
    Step sizes are softplus(delta + delta_bias)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, delta_bias):
        lib = _library(u.dtype)[0]
        batch, length, kd = u.shape
        groups, nstate = B.shape[2], B.shape[3]
        dim = kd // groups
        slices = _slices(dim, groups, nstate, u.element_size())
        dt = delta.clone() if delta_bias is None else torch.add(delta, delta_bias)
        F.softplus(dt, 1, 20, out=dt)  # in place: one (batch, L, K*D) tensor, kept for backward
        At = A.t().contiguous()
        y = torch.empty_like(u)
        saved = u.new_empty(batch, -(-length // CHUNK), nstate, kd)
        geometry = (batch, length, groups, dim, nstate, slices)
        _run(lib.scan_forward, (*map(_ptr, (u, dt, At, B, C, D)), *geometry,
                                _ptr(y), _ptr(saved)), groups * slices)
        ctx.save_for_backward(u, dt, A, At, B, C, D, saved)
        ctx.geometry = geometry
        ctx.has_bias = delta_bias is not None
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y):
        u, dt, A, At, B, C, D, saved = ctx.saved_tensors
        need = ctx.needs_input_grad
        lib = _library(u.dtype)[0]
        slices = ctx.geometry[-1]
        groups = ctx.geometry[2]
        gy = grad_y.contiguous()
        du, ddelta = torch.empty_like(u), torch.empty_like(u)
        dA = torch.zeros_like(A) if need[2] else None
        dD = torch.zeros_like(D) if D is not None and need[5] else None
        dB_parts = B.new_zeros(slices, *B.shape)
        dC_parts = C.new_zeros(slices, *C.shape)
        _run(lib.scan_backward,
             (*map(_ptr, (u, dt, At, B, C, D)), *ctx.geometry,
              *map(_ptr, (gy, saved, du, ddelta, dA, dD, dB_parts, dC_parts))), groups * slices)
        dbias = ddelta.sum((0, 1)) if ctx.has_bias and need[6] else None
        return du, ddelta, dA, dB_parts.sum(0), dC_parts.sum(0), dD, dbias


def cpu_kernel_applies(dim: int, A: torch.Tensor, delta_softplus: bool) -> Optional[str]:
    """Why the kernel cannot take these inputs (None when it can): it computes
    decays exp(dt A) for dt >= 0 and A <= 0 only, in blocks of 8 channels."""
    if not delta_softplus:
        return 'delta_softplus=False (the kernel needs softplus step sizes)'
    if dim % 8:
        return f'{dim} channels per direction (the kernel needs a multiple of 8)'
    if A.shape[1] > MAX_STATE:
        return f'd_state {A.shape[1]} (the kernel takes at most {MAX_STATE})'
    if not bool((A <= 0).all()):
        return 'positive entries in A (the kernel needs A <= 0)'
    return None


def cpu_kernel_scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                    C: torch.Tensor, D: Optional[torch.Tensor] = None,
                    delta_bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The selective scan with softplus step sizes, compiled (see :func:`cpu_kernel_applies`).

    Args:
        u, delta (Tensor): (batch, L, K*D); A: (K*D, N); B, C: (batch, L, K, N);
            D, delta_bias: (K*D,) or None. One dtype, float32 or float64, on the CPU.

    Returns:
        Tensor: (batch, L, K*D), ``sum_n C h + D u``.
    """
    def dense(t):
        return None if t is None else t.contiguous()

    return _CpuScanFn.apply(*map(dense, (u, delta, A, B, C, D, delta_bias)))
