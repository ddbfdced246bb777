"""One variant in its own process: time, memory, FLOPs, profile; the machine's rates."""
import gc
import math
import multiprocessing
import os.path as osp
import tempfile
import time
import traceback
from contextlib import nullcontext
from typing import List, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .recipes import (AMP_DTYPES, TARGETS, _sync, load_model, make_inputs, reference_maps,
                      session_maps)


# ---- measuring --------------------------------------------------------------------
def _status_kib(field: str) -> Optional[int]:
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(field + ':'):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_rss_bytes() -> int:
    """Peak resident memory of this process (VmHWM; ru_maxrss where /proc is absent)."""
    kib = _status_kib('VmHWM')
    if kib is None:
        import resource
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib * 1024


def reset_peak_rss() -> bool:
    """Restart VmHWM from the current resident size (Linux ``clear_refs`` 5), so
    that the peak of the timed part is not the warm-up's; False where not possible."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def rss_bytes() -> int:
    kib = _status_kib('VmRSS')
    return (kib or 0) * 1024


def _warmup(model, inputs: torch.Tensor) -> None:
    """One full forward and a dense and a windowed backward on one image, the same
    in every variant's process: one-time costs (oneDNN kernel generation for each
    shape, CUDA context, allocator growth) stay out of the timings."""
    from ..engine.gradients import WindowedConvGrads
    x = inputs[:1].detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = model(x, mode='tensor')
        _centre_grad(out, x, retain=True)
        with WindowedConvGrads():
            _centre_grad(out, x, retain=False)


def _checksum(model, inputs) -> List[float]:
    with torch.no_grad():
        params = sum(float(p.double().abs().sum()) for p in model.parameters())
        return [params, float(inputs.double().abs().sum())]


def count_flops(model, inputs: torch.Tensor, targets: Sequence[str] = TARGETS) -> dict:
    """FLOPs per image (``torch.utils.flop_counter``: matmuls and convolutions) of
    (b) — one truncated forward plus one backward per target, with windowed
    convolution gradients as :class:`ERFSession` runs them — and of (a) — per
    target a full forward plus the dense backward."""
    from torch.utils.flop_counter import FlopCounterMode

    from ..engine import FeatureTaps
    from ..engine.gradients import WindowedConvGrads, windowed_by_default
    from ..engine.session import frozen_parameters
    taps = FeatureTaps(model, targets)
    x = inputs[:1].detach().clone().requires_grad_(True)
    backward, dense = {}, {}
    with torch.enable_grad(), frozen_parameters(model):
        with FlopCounterMode(display=False) as counter:
            feats = taps(x)
        forward = counter.get_total_flops()
        for name in taps.names:
            with FlopCounterMode(display=False) as counter:
                _centre_grad(feats[name], x, retain=True)
            dense[name] = backward[name] = counter.get_total_flops()
            if windowed_by_default(name):
                with FlopCounterMode(display=False) as counter, WindowedConvGrads():
                    _centre_grad(feats[name], x, retain=True)
                backward[name] = counter.get_total_flops()
    del feats
    if taps._deepest_stage(taps.names) >= 2:  # the truncated forward ran everything
        full = forward
    else:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(inputs[:1], mode='tensor')
        full = counter.get_total_flops()
    return dict(forward=forward, full_forward=full, backward=backward, dense_backward=dense,
                b=forward + sum(backward.values()), b_dense=forward + sum(dense.values()),
                a=len(dense) * full + sum(dense.values()))


def phase_profile(model, inputs: torch.Tensor, targets: Sequence[str] = TARGETS,
                  device: str = 'cpu', row_limit: int = 12) -> dict:
    """Where one image's time goes: seconds of each phase of (a) and (b), and the
    torch.profiler operator table (self time) of (b)."""
    from torch.profiler import profile

    from ..engine import FeatureTaps
    from ..engine.gradients import WindowedConvGrads, windowed_by_default
    from ..engine.session import frozen_parameters
    x0 = inputs[:1]
    phases_b = {}
    taps = FeatureTaps(model, targets)
    with torch.enable_grad(), frozen_parameters(model):
        x = x0.detach().clone().requires_grad_(True)
        _sync(device)
        t = time.perf_counter()
        feats = taps(x)
        _sync(device)
        phases_b['forward (truncated, all targets)'] = time.perf_counter() - t
        names = list(feats)
        for k, name in enumerate(names):
            t = time.perf_counter()
            with WindowedConvGrads() if windowed_by_default(name) else nullcontext():
                _centre_grad(feats[name], x, retain=k < len(names) - 1)
            _sync(device)
            phases_b[f'backward {name}'] = time.perf_counter() - t
        del feats
    phases_a = {}
    captured = {}
    handle = model.backbone.register_forward_hook(
        lambda _m, _a, out: captured.__setitem__('backbone', out))
    try:
        with torch.enable_grad():
            for name in targets:
                x = x0.detach().clone().requires_grad_(True)
                t = time.perf_counter()
                out = model(x, mode='tensor')
                _sync(device)
                phases_a[f'forward (full) for {name}'] = time.perf_counter() - t
                feat = out if name == 'decode_head' else \
                    captured['backbone'][int(name.split('.', 1)[1])]
                t = time.perf_counter()
                h, w = feat.shape[2:]
                torch.autograd.grad(F.relu(feat[:, :, h // 2, w // 2]).sum(), x)
                _sync(device)
                phases_a[f'backward {name}'] = time.perf_counter() - t
                del out, feat
                captured.clear()
    finally:
        handle.remove()
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.startswith('cuda'):
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        session_maps(model, x0, targets)
        _sync(device)
    sort = 'self_cuda_time_total' if device.startswith('cuda') else 'self_cpu_time_total'
    table = prof.key_averages().table(sort_by=sort, row_limit=row_limit,
                                      max_name_column_width=40)
    return dict(phases_a=phases_a, phases_b=phases_b, table=table)


def _centre_grad(feat: torch.Tensor, x: torch.Tensor, retain: bool) -> torch.Tensor:
    h, w = feat.shape[2:]
    return torch.autograd.grad(F.relu(feat[:, :, h // 2, w // 2]).sum(), x,
                               retain_graph=retain)[0]


def measure(spec: Mapping) -> dict:
    """Run one variant as ``spec`` says and return its timings, memory and maps.

    spec keys: ``variant`` ('a', 'b', 'flops', 'profile'), ``config``, ``size``,
    ``num_images``, and optionally ``batch_size`` (1), ``targets``, ``device``
    ('cpu'), ``amp`` (None, 'bf16', 'fp16': autocast of (b) on a GPU), ``warmup``
    (True), ``seed`` (0), ``images`` (a folder), ``threads`` (torch's default),
    ``maps_out`` (an .npz path for the summed maps), ``cfg_options`` (config
    overrides).
    """
    variant = spec['variant']
    device = spec.get('device', 'cpu')
    targets = tuple(spec.get('targets') or TARGETS)
    if spec.get('threads'):
        torch.set_num_threads(int(spec['threads']))
    model = load_model(spec['config'], device, spec.get('seed', 0), spec.get('cfg_options'))
    inputs = make_inputs(model, spec['num_images'], spec['size'], spec.get('images'),
                         spec.get('seed', 0))
    result = dict(variant=variant, threads=torch.get_num_threads(),
                  checksum=_checksum(model, inputs), rss_base=rss_bytes())
    if variant == 'flops':
        result['flops'] = count_flops(model, inputs, targets)
        return result
    if spec.get('warmup', True):
        _warmup(model, inputs)
        gc.collect()
    result['peak_reset'] = reset_peak_rss()
    if variant == 'profile':
        result.update(phase_profile(model, inputs, targets, device))
        return result
    if device.startswith('cuda'):
        torch.cuda.reset_peak_memory_stats()
    _sync(device)
    times: List[float] = []
    start, cpu_start = time.perf_counter(), time.process_time()
    if variant == 'a':
        maps = reference_maps(model, inputs, targets, times)
    elif variant == 'b':
        amp = spec.get('amp')
        if amp:
            with torch.autocast(device_type=device.split(':')[0], dtype=AMP_DTYPES[amp]):
                maps = session_maps(model, inputs, targets, spec.get('batch_size', 1), times)
        else:
            maps = session_maps(model, inputs, targets, spec.get('batch_size', 1), times)
    else:
        raise ValueError(f'unknown variant {variant!r}')
    _sync(device)
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    result.update(seconds=seconds, per_image=seconds / spec['num_images'],
                  image_times=times, best=min(times), cpu_per_image=cpu / spec['num_images'],
                  images_per_s=spec['num_images'] / seconds, rss_peak=peak_rss_bytes(),
                  gpu_peak=(torch.cuda.max_memory_allocated()
                            if device.startswith('cuda') else None))
    # the machine's rate, sampled again in every run: a busy machine lowers it
    if spec.get('matmul_rate', True):
        result['matmul_rate'] = matmul_rate(device, repeats=3)
        result['conv_rate'] = conv_rate(device, repeats=3)
    if spec.get('maps_out'):
        np.savez(spec['maps_out'], **maps)
    else:
        result['maps'] = maps
    return result


def _entry(spec, conn) -> None:
    try:
        conn.send(('ok', measure(spec)))
    except BaseException:  # report, not hang: the parent waits on this pipe
        conn.send(('error', traceback.format_exc()))
    finally:
        conn.close()


def run_isolated(spec: Mapping) -> dict:
    """:func:`measure` in a fresh spawned process (its own peak memory); maps come
    back through an .npz file. A crashed process (e.g. killed for memory) gives
    ``{'error': ...}``."""
    ctx = multiprocessing.get_context('spawn')
    with tempfile.TemporaryDirectory(prefix='erf_bench_') as tmp:
        spec = dict(spec)
        wants_maps = spec['variant'] in ('a', 'b')
        if wants_maps:
            spec['maps_out'] = osp.join(tmp, 'maps.npz')
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_entry, args=(spec, child))
        proc.start()
        child.close()
        try:
            status, payload = parent.recv()
        except EOFError:
            status, payload = 'error', None
        proc.join()
        if status != 'ok':
            return dict(variant=spec['variant'],
                        error=payload or f'worker died (exit code {proc.exitcode}; '
                                         f'-9 usually means killed for memory)')
        if wants_maps:
            with np.load(spec['maps_out']) as data:
                payload['maps'] = {k: data[k] for k in data.files}
        return payload


def matmul_rate(device: str = 'cpu', n: int = 4096, repeats: int = 5) -> float:
    """Best float32 ``torch.mm`` rate (FLOP/s) of n x n matrices on ``device``."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    return 2 * n ** 3 / _best_time(lambda: torch.mm(a, b), device, repeats)


def conv_rate(device: str = 'cpu', repeats: int = 5) -> float:
    """Best float32 rate (FLOP/s) of a 3x3 convolution, 512 -> 512 channels at 64 x 64
    (oneDNN's convolutions beat ``torch.mm`` on some CPUs)."""
    x = torch.randn(1, 512, 64, 64, device=device)
    w = torch.randn(512, 512, 3, 3, device=device)
    return 2 * 512 * 512 * 9 * 64 * 64 / _best_time(lambda: F.conv2d(x, w, padding=1),
                                                    device, repeats)


def _best_time(fn, device: str, repeats: int) -> float:
    fn()
    _sync(device)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best


