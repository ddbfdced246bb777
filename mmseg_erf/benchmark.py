"""Speed and memory of mmseg-erf against the reference ERF recipe (``tools/benchmark_erf.py``).

Two ways to get the same maps on the same model and the same images:

(a) the reference recipe of RepLKNet's and VMamba's ``erf`` scripts: batch 1, one
    target per pass, the whole segmentor run forward for every target
    (``model(x, mode='tensor')``, backbone stages read by a forward hook), then
    ``g = autograd.grad(relu(F[:, :, h//2, w//2]).sum(), x)`` and
    ``relu(g).sum(channels)`` accumulated;
(b) mmseg-erf: :class:`~mmseg_erf.engine.ERFSession`, every target captured in one
    forward truncated after the deepest one, one backward per target on the
    retained graph, images batched.

Each variant runs in its own spawned process so that peak resident memory
(``VmHWM``, restarted after an untimed warm-up image) and peak GPU memory belong
to that variant alone (model and inputs included); the parent only
schedules the runs (interleaved a, b, b, a, ... to share the noise of a busy
machine), measures the matmul and convolution rates and prints the tables.
"""
import gc
import json
import math
import multiprocessing
import os
import os.path as osp
import tempfile
import time
import traceback
import warnings
from contextlib import nullcontext
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))

# name -> config; configs that do not exist (yet) are skipped with a note
MODEL_TABLE = {
    'vmamba-t': 'configs/vmamba/upernet_vssm_4xb4-160k_ade20k-512x512_tiny.py',
    'r50': 'mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py',
    'tiny': 'configs/demo/upernet_r18-tiny_imagefolder.py',
}
DEFAULT_MODELS = ('vmamba-t', 'r50')
TARGETS = ('backbone.0', 'backbone.1', 'backbone.2', 'backbone.3', 'decode_head')
AMP_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}
GIB = 2 ** 30


# ---- models and images ------------------------------------------------------------
def resolve_config(path: str) -> Optional[str]:
    """File of a config given as a path (absolute, or relative to the working
    directory or the repository) or as ``package::relative/path``; None if absent."""
    if '::' in path:
        package, _, rel = path.partition('::')
        try:
            from mmengine.utils import get_installed_path
            full = osp.join(get_installed_path(package), '.mim', 'configs', rel)
        except Exception:  # package not installed
            return None
        return full if osp.isfile(full) else None
    for candidate in (path, osp.join(REPO, path)):
        if osp.isfile(candidate):
            return osp.abspath(candidate)
    return None


def load_model(config: str, device: str = 'cpu', seed: int = 0):
    """The config's segmentor with mmseg's random initial weights (seeded), eval mode."""
    from .segmentor import build_segmentor
    path = resolve_config(config)
    if path is None:
        raise FileNotFoundError(f'config {config} does not exist')
    with warnings.catch_warnings():
        # mmseg's own deprecation notes, printed again by every variant's process
        warnings.filterwarnings('ignore', message='``build_loss`` would be deprecated')
        warnings.filterwarnings('ignore', message='Default ``avg_non_ignore`` is False')
        model, _, _ = build_segmentor(path, device=device, seed=seed)
    return model


def make_inputs(model, num_images: int, size: int, images: Optional[str] = None,
                seed: int = 0) -> torch.Tensor:
    """``(N, 3, S, S)`` model inputs: random 8-bit images (seeded), or the images of a
    folder (cycled, e.g. ``tools/demo_images.py`` output), each resized and
    centre-cropped to S and normalised by the segmentor's data preprocessor."""
    from .segmentor import batch_inputs
    if images:
        import mmcv
        files = sorted(f for f in os.listdir(images)
                       if f.lower().endswith(('.jpg', '.jpeg', '.png', '.bmp')))
        if not files:
            raise FileNotFoundError(f'no image in {images}')
        raw = [torch.from_numpy(np.ascontiguousarray(
            mmcv.imread(osp.join(images, files[i % len(files)])))).permute(2, 0, 1)
            for i in range(num_images)]
    else:
        gen = torch.Generator().manual_seed(seed)
        raw = [torch.randint(0, 256, (3, size, size), generator=gen, dtype=torch.uint8)
               for _ in range(num_images)]
    with torch.no_grad():
        return torch.cat([batch_inputs(model, dict(inputs=[img]), size) for img in raw])


def _check_targets(targets: Sequence[str]) -> None:
    for name in targets:
        if name != 'decode_head' and not (name.startswith('backbone.')
                                          and name.split('.', 1)[1].isdigit()):
            raise ValueError(f'the reference recipe takes backbone.<i> (i >= 0) and '
                             f'decode_head, not {name!r}')


# ---- the two variants -------------------------------------------------------------
def reference_maps(model, inputs: torch.Tensor, targets: Sequence[str] = TARGETS,
                   times: Optional[list] = None) -> Dict[str, np.ndarray]:
    """(a) The reference recipe: per image, per target, a full forward and a backward.

    Returns ``{target: (H, W) float64 sum over the images}``; appends each image's
    seconds to ``times`` when given.
    """
    from .engine.targets import as_feature_map
    _check_targets(targets)
    captured = {}

    def hook(_module, _args, output):
        captured['backbone'] = output

    handle = model.backbone.register_forward_hook(hook)
    sums: Dict[str, torch.Tensor] = {}
    try:
        with torch.enable_grad():
            for i in range(inputs.shape[0]):
                start = time.perf_counter()
                for name in targets:
                    x = inputs[i:i + 1].detach().clone().requires_grad_(True)
                    out = model(x, mode='tensor')
                    if name == 'decode_head':
                        feat = out
                    else:
                        index = int(name.split('.', 1)[1])
                        feat = as_feature_map(captured['backbone'][index], name,
                                              tuple(x.shape[-2:]))
                    h, w = feat.shape[2:]
                    score = F.relu(feat[:, :, h // 2, w // 2]).sum()
                    (grad, ) = torch.autograd.grad(score, x)
                    erf = F.relu(grad).sum(dim=(0, 1)).to(torch.float64).cpu()
                    sums[name] = sums[name] + erf if name in sums else erf
                    del out, feat, score, grad
                    captured.clear()
                if times is not None:
                    _sync(str(inputs.device))
                    times.append(time.perf_counter() - start)
    finally:
        handle.remove()
    return {n: sums[n].numpy() for n in targets}


def session_maps(model, inputs: torch.Tensor, targets: Sequence[str] = TARGETS,
                 batch_size: int = 1, times: Optional[list] = None) -> Dict[str, np.ndarray]:
    """(b) mmseg-erf: :class:`ERFSession` over batches of ``batch_size`` images.

    Returns ``{target: (H, W) float64 sum over the images}`` (as (a)); appends
    seconds per image (a batch's time shared by its images) to ``times``.
    """
    from .engine import ERFSession
    session = ERFSession(model, targets, num_images=inputs.shape[0])
    for first in range(0, inputs.shape[0], batch_size):
        start = time.perf_counter()
        used = session.process(inputs[first:first + batch_size])
        if times is not None:
            _sync(str(inputs.device))
            times += [(time.perf_counter() - start) / used] * used
    acc = session.accumulator
    if acc.skipped:
        raise RuntimeError(f'{acc.skipped} image(s) gave non-finite maps')
    return {n: acc.sums[n].copy() for n in acc.names}


def map_agreement(ref: Mapping[str, np.ndarray],
                  other: Mapping[str, np.ndarray]) -> Dict[str, float]:
    """Per target ``max |a - b| / max |a|`` (0 when both are all zero)."""
    out = {}
    for name, a in ref.items():
        b = np.asarray(other[name], dtype=np.float64)
        scale = float(np.abs(a).max())
        diff = float(np.abs(a - b).max())
        out[name] = diff / scale if scale > 0 else (0.0 if diff == 0 else math.inf)
    return out


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


def _sync(device: str) -> None:
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def _warmup(model, inputs: torch.Tensor) -> None:
    """One full forward and a dense and a windowed backward on one image, the same
    in every variant's process: one-time costs (oneDNN kernel generation for each
    shape, CUDA context, allocator growth) stay out of the timings."""
    from .engine.gradients import WindowedConvGrads
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

    from .engine import FeatureTaps
    from .engine.gradients import WindowedConvGrads, windowed_by_default
    from .engine.session import frozen_parameters
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

    from .engine import FeatureTaps
    from .engine.gradients import WindowedConvGrads, windowed_by_default
    from .engine.session import frozen_parameters
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
    ``maps_out`` (an .npz path for the summed maps).
    """
    variant = spec['variant']
    device = spec.get('device', 'cpu')
    targets = tuple(spec.get('targets') or TARGETS)
    if spec.get('threads'):
        torch.set_num_threads(int(spec['threads']))
    model = load_model(spec['config'], device, spec.get('seed', 0))
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


# ---- the command ------------------------------------------------------------------
def _fmt_gib(value) -> str:
    return '-' if not value else f'{value / GIB:.2f}'


def _median(values):
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else 0.5 * (values[mid - 1] + values[mid])


def variant_stats(runs: Sequence[dict]) -> Optional[dict]:
    """Per-image seconds over every image of every successful run of one variant:
    median, best (least disturbed by other load), CPU seconds; peak memory."""
    good = [r for r in runs if 'error' not in r]
    if not good:
        return None
    times = [t for r in good for t in r['image_times']]
    return dict(runs=len(good), median=_median(times), best=min(times),
                cpu=_median([r['cpu_per_image'] for r in good]),
                rss_peak=max(r['rss_peak'] for r in good),
                rss_base=max(r['rss_base'] for r in good),
                gpu_peak=max((r['gpu_peak'] or 0) for r in good))


TABLE_HEAD = ['| model | size | variant | images x runs | s / image (median) | s / image '
              '(best) | CPU s / image | images / s | peak RSS (GiB) | peak GPU (GiB) |',
              '|---|---|---|---|---|---|---|---|---|---|']
RATIO_HEAD = ['| model | size | time b/a (median) | time b/a (best) | CPU time b/a | '
              'speed-up a/b | maps max rel. diff | FLOPs a / b per image (G) | '
              '(b) % of FLOP floor |',
              '|---|---|---|---|---|---|---|---|---|']


def table_rows(report: dict, batch_size: int, num_images: int) -> List[str]:
    rows = []
    labels = {'a': '(a) reference', 'b': f'(b) mmseg-erf, batch {batch_size}'}
    for variant in ('a', 'b'):
        st = report['stats'].get(variant)
        if st:
            rows.append(
                f'| {report["model"]} | {report["size"]} | {labels[variant]} | '
                f'{num_images} x {st["runs"]} | {st["median"]:.2f} | {st["best"]:.2f} | '
                f'{st["cpu"]:.2f} | {1 / st["median"]:.3f} | {_fmt_gib(st["rss_peak"])} | '
                f'{_fmt_gib(st["gpu_peak"])} |')
    return rows


def ratio_row(report: dict, rate: float) -> str:
    sa, sb = report['stats'].get('a'), report['stats'].get('b')
    flops = report.get('flops')
    if sa and sb:
        med, best = sb['median'] / sa['median'], sb['best'] / sa['best']
        ratio = f'{med:.3f} | {best:.3f} | {sb["cpu"] / sa["cpu"]:.3f} | {1 / med:.2f}x'
    else:
        ratio = '- | - | - | -'
    worst = max(report.get('agreement', {'': math.nan}).values())
    fl = f'{flops["a"] / 1e9:.4g} / {flops["b"] / 1e9:.4g}' if flops else '-'
    frac = f'{100 * flops["b"] / rate / sb["best"]:.0f}%' if flops and sb else '-'
    return (f'| {report["model"]} | {report["size"]} | {ratio} | {worst:.1e} | {fl} | '
            f'{frac} |')


def benchmark(name: str, config: str, size: int, args) -> dict:
    """All runs of one model and size: flops, interleaved (a)/(b), amp, profile."""
    base = dict(config=config, size=size, num_images=args.num_images,
                batch_size=args.batch_size, targets=list(args.targets), device=args.device,
                warmup=not args.no_warmup, seed=args.seed, images=args.images,
                threads=args.threads)
    report = dict(model=name, config=config, size=size, runs={'a': [], 'b': []})
    if not args.no_flops:
        out = run_isolated(dict(base, variant='flops', num_images=1))
        report['flops'] = out.get('flops')
        if 'error' in out:
            print(f'  flop count failed: {out["error"].strip().splitlines()[-1]}')
    for rep in range(args.repeats):
        for variant in (('a', 'b') if rep % 2 == 0 else ('b', 'a')):
            print(f'  {name} {size}: run {rep + 1}/{args.repeats} variant ({variant}) ...',
                  flush=True)
            out = run_isolated(dict(base, variant=variant))
            if 'error' in out:
                print(f'  variant ({variant}) failed:\n{out["error"]}')
            else:
                print(f'    s/image: {", ".join(f"{t:.2f}" for t in out["image_times"])}; '
                      f'CPU {out["cpu_per_image"]:.2f} s/image; peak RSS '
                      f'{_fmt_gib(out["rss_peak"])} GiB (model + inputs '
                      f'{_fmt_gib(out["rss_base"])} GiB'
                      f'{"" if out.get("peak_reset") else "; the peak includes the warm-up"})',
                      flush=True)
            report['runs'][variant].append(out)
    report['stats'] = {v: variant_stats(report['runs'][v]) for v in ('a', 'b')}
    good = {v: [r for r in report['runs'][v] if 'error' not in r] for v in ('a', 'b')}
    if good['a'] and good['b']:
        if good['a'][0]['checksum'] != good['b'][0]['checksum']:
            print('  WARNING: (a) and (b) did not see the same weights and images')
        report['agreement'] = map_agreement(good['a'][0]['maps'], good['b'][0]['maps'])
        report['pair_ratios'] = [rb['per_image'] / ra['per_image']
                                 for ra, rb in zip(good['a'], good['b'])]
    if args.amp:
        if not args.device.startswith('cuda'):
            report['amp_note'] = (f'--amp {args.amp} skipped: reduced precision is '
                                  f'measured on a GPU only (device {args.device})')
        else:
            out = run_isolated(dict(base, variant='b', amp=args.amp))
            report['amp'] = out
            if 'error' not in out and good['b']:
                out['agreement'] = map_agreement(good['b'][0]['maps'], out['maps'])
    if args.profile:
        report['profile'] = run_isolated(dict(base, variant='profile', num_images=1))
    for r in [r for runs in report['runs'].values() for r in runs] + [report.get('amp', {})]:
        r.pop('maps', None)
    return report


def print_report(report: dict, args, rate: float) -> None:
    name, size = report['model'], report['size']
    print(f'\n### {name} at {size} x {size} ({report["config"]})\n')
    print('\n'.join(TABLE_HEAD + table_rows(report, args.batch_size, args.num_images)))
    print()
    print('\n'.join(RATIO_HEAD + [ratio_row(report, rate)]))
    if report.get('pair_ratios'):
        print(f'\ntime b/a of each interleaved pair of runs: '
              f'{", ".join(f"{r:.3f}" for r in report["pair_ratios"])}')
    if 'agreement' in report:
        worst = max(report['agreement'].values())
        verdict = 'agree' if worst <= args.tol else 'DISAGREE'
        print(f'maps {verdict} (max |a - b| / max |a|, tolerance {args.tol:g}): ' +
              ', '.join(f'{n} {v:.1e}' for n, v in report['agreement'].items()))
    flops = report.get('flops')
    if flops:
        print(f'FLOPs per image (FlopCounterMode: matmuls and convolutions): '
              f'(a) {flops["a"] / 1e9:.4g} G = {len(flops["backward"])} x full forward '
              f'{flops["full_forward"] / 1e9:.4g} G + dense backwards ' +
              ', '.join(f'{n} {v / 1e9:.4g} G' for n, v in flops['dense_backward'].items()) +
              f'; (b) {flops["b"] / 1e9:.4g} G = forward {flops["forward"] / 1e9:.4g} G + '
              f'windowed backwards ' +
              ', '.join(f'{n} {v / 1e9:.4g} G' for n, v in flops['backward'].items()) +
              f' ({flops["b_dense"] / 1e9:.4g} G with dense backwards)')
        for variant in ('a', 'b'):
            st = report['stats'].get(variant)
            if st:
                floor = flops[variant] / rate
                print(f'  ({variant}) floor {floor:.2f} s/image at {rate / 1e9:.0f} GFLOP/s; '
                      f'best {st["best"]:.2f} s/image = {100 * floor / st["best"]:.0f}% of '
                      f'the floor rate (median {st["median"]:.2f} s: '
                      f'{100 * floor / st["median"]:.0f}%)')
    if report.get('amp_note'):
        print(report['amp_note'])
    amp = report.get('amp')
    if amp:
        if 'error' in amp:
            print(f'--amp {args.amp} failed:\n{amp["error"]}')
        else:
            print(f'--amp {args.amp}: {amp["per_image"]:.2f} s/image, peak GPU '
                  f'{_fmt_gib(amp["gpu_peak"])} GiB; error against float32 (b) '
                  f'(max abs diff / max): ' +
                  ', '.join(f'{n} {v:.1e}' for n, v in amp.get('agreement', {}).items()))
    prof = report.get('profile')
    if prof:
        if 'error' in prof:
            print(f'profile failed:\n{prof["error"]}')
        else:
            print('\nphases of one image (seconds):')
            for label, phases in (('(a)', prof['phases_a']), ('(b)', prof['phases_b'])):
                print(f'  {label} total {sum(phases.values()):.2f}: ' +
                      '; '.join(f'{k} {v:.2f}' for k, v in phases.items()))
            print('torch.profiler, (b) on one image, by self time:')
            print(prof['table'])


def build_parser():
    import argparse
    parser = argparse.ArgumentParser(
        prog='benchmark_erf.py',
        description='Time the reference ERF recipe (a) against mmseg-erf (b) on the same '
                    'model and images; each variant in its own process.')
    parser.add_argument('--models', nargs='+', default=list(DEFAULT_MODELS),
                        help=f'names from the table ({", ".join(MODEL_TABLE)}) or config '
                             f'paths; default: {" ".join(DEFAULT_MODELS)}')
    parser.add_argument('--sizes', nargs='+', type=int, default=[512],
                        help='input sides S (default 512; 1024 is the other reference size)')
    parser.add_argument('--num-images', type=int, default=2, help='images per run')
    parser.add_argument('--batch-size', type=int, default=1, help='batch size of (b)')
    parser.add_argument('--repeats', type=int, default=1,
                        help='(a)/(b) pairs of runs, interleaved a b, b a, ...')
    parser.add_argument('--targets', nargs='+', default=list(TARGETS),
                        help='backbone.<i> and decode_head (default: the four stages and '
                             'decode_head)')
    parser.add_argument('--images', help='folder of images (e.g. tools/demo_images.py '
                                         'output); default random images')
    parser.add_argument('--device', default='cpu', help='cpu or cuda')
    parser.add_argument('--amp', choices=sorted(AMP_DTYPES),
                        help='also run (b) under autocast and print its error against '
                             'float32 (GPU only)')
    parser.add_argument('--threads', type=int,
                        help="torch threads in every run (default torch's)")
    parser.add_argument('--omp-wait-policy', choices=['PASSIVE', 'ACTIVE'],
                        default=os.environ.get('OMP_WAIT_POLICY', 'PASSIVE').upper(),
                        help='OpenMP wait policy of the runs (default PASSIVE unless set '
                             'in the environment: robust on a shared machine)')
    parser.add_argument('--seed', type=int, default=0, help='weights and random images')
    parser.add_argument('--no-warmup', action='store_true',
                        help='also time one-time setup (no untimed pass on the first image)')
    parser.add_argument('--no-flops', action='store_true', help='skip the FLOP count')
    parser.add_argument('--profile', action='store_true',
                        help='also time the phases of one image of (a) and (b) and print '
                             'the torch.profiler table of (b)')
    parser.add_argument('--tol', type=float, default=1e-5,
                        help='largest accepted max|a-b|/max|a| (default 1e-5)')
    parser.add_argument('--json-out', help='write every measurement to this JSON file')
    return parser


def main(argv=None) -> int:
    import platform
    args = build_parser().parse_args(argv)
    _check_targets(args.targets)
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        print('no CUDA device: use --device cpu')
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    # read by each spawned run's OpenMP at start-up: threads that spin at barriers
    # (the default) slow small operators down up to 100x on a machine whose cores
    # other processes also use; sleeping threads cost little when it is idle
    os.environ['OMP_WAIT_POLICY'] = args.omp_wait_policy
    machine = (f'{torch.cuda.get_device_name()}, torch {torch.__version__}'
               if args.device.startswith('cuda') else
               f'{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, '
               f'{torch.get_num_threads()} threads, OMP_WAIT_POLICY={args.omp_wait_policy}')
    rates = dict(mm=matmul_rate(args.device), conv=conv_rate(args.device))
    print(f'machine: {machine}; float32 torch.mm 4096^2 {rates["mm"] / 1e9:.0f} GFLOP/s, '
          f'3x3 convolution {rates["conv"] / 1e9:.0f} GFLOP/s')
    models = []
    for name in args.models:
        config = MODEL_TABLE.get(name, name)
        if resolve_config(config) is None:
            print(f'note: skipping {name}: config {config} does not exist (yet)')
            continue
        models.append((name, config))
    reports, failed = [], False
    for name, config in models:
        for size in args.sizes:
            print(f'\n{name} at {size}: {args.num_images} image(s) per run, targets '
                  f'{" ".join(args.targets)}', flush=True)
            report = benchmark(name, config, size, args)
            for key, field in (('mm', 'matmul_rate'), ('conv', 'conv_rate')):
                rates[key] = max([rates[key]] + [r[field] for runs in report['runs'].values()
                                                 for r in runs if field in r])
            print_report(report, args, max(rates.values()))
            failed |= any('error' in r for runs in report['runs'].values() for r in runs)
            failed |= max(report.get('agreement', {'': 0}).values()) > args.tol
            reports.append(report)
    if reports:
        print('\n## Summary\n')
        print('\n'.join(TABLE_HEAD + [row for rep in reports
                                      for row in table_rows(rep, args.batch_size,
                                                            args.num_images)]))
        print()
        rate = max(rates.values())
        print('\n'.join(RATIO_HEAD + [ratio_row(rep, rate) for rep in reports]))
        print(f'\nmachine: {machine}; float32 rates, best of all runs: torch.mm 4096^2 '
              f'{rates["mm"] / 1e9:.0f} GFLOP/s, 3x3 convolution {rates["conv"] / 1e9:.0f} '
              f'GFLOP/s. FLOP floor = FLOPs / the higher rate; % of the floor uses the best '
              f'image time.')
    if args.json_out:
        with open(args.json_out, 'w') as f:
            json.dump(dict(machine=machine, rates=rates, args=vars(args),
                           reports=reports), f, indent=1, default=str)
    return 1 if failed else 0
