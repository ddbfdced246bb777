"""Statistics and tables of the benchmark runs, and the command."""
import json
import math
import os
from typing import List, Optional, Sequence

import torch

from .measure import conv_rate, matmul_rate, run_isolated
from .recipes import (AMP_DTYPES, DEFAULT_MODELS, GIB, MODEL_TABLE, TARGETS, _check_targets,
                      map_agreement, resolve_config)


# ---- statistics and tables ------------------------------------------------------
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


# ---- the command ------------------------------------------------------------------
def benchmark(name: str, config: str, size: int, args) -> dict:
    """All runs of one model and size: flops, interleaved (a)/(b), amp, profile."""
    base = dict(config=config, size=size, num_images=args.num_images,
                batch_size=args.batch_size, targets=list(args.targets), device=args.device,
                warmup=not args.no_warmup, seed=args.seed, images=args.images,
                threads=args.threads, cfg_options=args.cfg_options)
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

    from mmengine.config import DictAction
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
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings of every model, key=value (e.g. '
                             'model.backbone.use_checkpoint=True)')
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
                  f'{" ".join(args.targets)}'
                  + (f', --cfg-options {args.cfg_options}' if args.cfg_options else ''),
                  flush=True)
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

