"""OpenMP wait policies side by side, idle and with one core busy (``tools/benchmark_omp.py``).

Each run is a fresh process (OpenMP reads ``OMP_WAIT_POLICY`` only when it loads)
that builds the model, warms up on one image and times the ERF of the others
with :class:`~mmseg_erf.engine.ERFSession`. The policies are ``default`` (the
variable unset and ``mmseg_erf`` imported first: its own choice, from the load
it sees at start-up), ``unset`` (OpenMP's own default: torch imported first, so
mmseg-erf cannot choose), ``PASSIVE`` and ``ACTIVE``; they are interleaved in a
rotating order, so that a change of the machine's load falls on all of them.
"busy" runs share the machine with a busy-loop process this script starts (one
core's worth of load) and stops. Every run also reports ``GOMP_SPINCOUNT`` as the
OpenMP runtime printed it (``OMP_DISPLAY_ENV=VERBOSE``): proof of the policy it ran.
"""
import argparse
import json
import os
import re
import subprocess
import sys
from typing import Dict, List, Optional, Sequence

from .recipes import MODEL_TABLE, REPO

POLICIES = ('default', 'unset', 'PASSIVE', 'ACTIVE')
TOOL_DEFAULT = 'default'
LABELS = {'default': "default (mmseg-erf's choice)", 'unset': 'unset (OpenMP default)',
          'PASSIVE': 'PASSIVE', 'ACTIVE': 'ACTIVE'}
# 'default': mmseg_erf first, so that it chooses; otherwise torch first, so that it cannot
# (with the variable unset, 'unset' must stay OpenMP's own default)
_CHILD = ('import {first}, json, sys; from mmseg_erf.benchmark.omp_policy import child_main; '
          'child_main(json.loads(sys.argv[1]))')
_BUSY = 'while True: pass'


def child_main(spec: dict) -> None:
    """One timed run in this process; prints its result as the last stdout line."""
    import torch

    from .recipes import load_model, make_inputs, session_maps
    if spec.get('threads'):
        torch.set_num_threads(int(spec['threads']))
    model = load_model(spec['config'], 'cpu', seed=0)
    inputs = make_inputs(model, spec['num_images'] + 1, spec['size'], seed=0)
    session_maps(model, inputs[:1], spec['targets'])        # warm-up, untimed
    times: List[float] = []
    session_maps(model, inputs[1:], spec['targets'], 1, times)
    print(json.dumps(dict(times=times, threads=torch.get_num_threads(),
                          policy=os.environ.get('OMP_WAIT_POLICY'))))


def _spin_count(stderr: str) -> Optional[str]:
    found = re.search(r"GOMP_SPINCOUNT = '(\d+)'", stderr)
    return found.group(1) if found else None


def run_policy(policy: str, spec: dict, timeout: float = 1800) -> dict:
    """One run under ``policy`` in a fresh process: image times, spin count."""
    env = {k: v for k, v in os.environ.items() if k != 'OMP_WAIT_POLICY'}
    if policy not in ('unset', 'default'):
        env['OMP_WAIT_POLICY'] = policy
    env['OMP_DISPLAY_ENV'] = 'VERBOSE'
    env['PYTHONPATH'] = os.pathsep.join([REPO] + [p for p in [env.get('PYTHONPATH')] if p])
    child = _CHILD.format(first='mmseg_erf' if policy == 'default' else 'torch')
    proc = subprocess.run([sys.executable, '-c', child, json.dumps(spec)], env=env,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        return dict(wanted=policy, error=proc.stderr[-3000:])
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out.update(wanted=policy, spin_count=_spin_count(proc.stderr))
    return out


def start_busy_loop() -> subprocess.Popen:
    """A process that keeps one core busy until stopped."""
    return subprocess.Popen([sys.executable, '-c', _BUSY], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait()


def measure_condition(condition: str, spec: dict, repeats: int,
                      policies: Sequence[str] = POLICIES, log=print) -> Dict[str, dict]:
    """Every policy ``repeats`` times in rotating order, under ``condition``
    ('idle' or 'busy'); returns ``{policy: {'times', 'spin_count', 'errors'}}``."""
    found = {p: dict(times=[], spin_count=None, errors=[], ran=set()) for p in policies}
    busy = start_busy_loop() if condition == 'busy' else None
    try:
        for rep in range(repeats):
            order = list(policies[rep % len(policies):]) + list(policies[:rep % len(policies)])
            for policy in order:
                out = run_policy(policy, spec)
                if 'error' in out:
                    found[policy]['errors'].append(out['error'])
                    log(f'  {condition} {policy}: failed\n{out["error"]}')
                    continue
                found[policy]['times'] += out['times']
                found[policy]['spin_count'] = out['spin_count']
                found[policy]['ran'].add(out['policy'] or "OpenMP's default")
                log(f'  {condition}, run {rep + 1}/{repeats}, {policy}: s/image '
                    + ', '.join(f'{t:.2f}' for t in out['times'])
                    + f' (GOMP_SPINCOUNT {out["spin_count"]}, OMP_WAIT_POLICY in the '
                      f'process: {out["policy"]})')
    finally:
        if busy is not None:
            stop(busy)
    return found


def _median(values: Sequence[float]) -> float:
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else 0.5 * (values[mid - 1] + values[mid])


def condition_rows(condition: str, found: Dict[str, dict]) -> List[str]:
    """Markdown rows: best and median s/image, and each against the best policy's."""
    stats = {p: (min(f['times']), _median(f['times'])) for p, f in found.items() if f['times']}
    if not stats:
        return []
    top_best = min(b for b, _ in stats.values())
    top_median = min(m for _, m in stats.values())
    rows = []
    for policy, (best, median) in stats.items():
        rows.append(f'| {condition} | {LABELS[policy]} | {found[policy]["spin_count"]} | '
                    f'{len(found[policy]["times"])} | {best:.3f} / {median:.3f} | '
                    f'{best / top_best:.2f}x / {median / top_median:.2f}x |')
    return rows


TABLE_HEAD = ['| machine | OMP_WAIT_POLICY | GOMP_SPINCOUNT | images | s / image best / median '
              '| against the best policy (best / median) |',
              '|---|---|---|---|---|---|']


def verdict(condition: str, found: Dict[str, dict], limit: float) -> Optional[str]:
    stats = {p: _median(f['times']) for p, f in found.items() if f['times']}
    if TOOL_DEFAULT not in stats:
        return None
    ratio = stats[TOOL_DEFAULT] / min(stats.values())
    word = 'within' if ratio <= limit else 'NOT within'
    ran = ' and '.join(sorted(found[TOOL_DEFAULT]['ran']))
    return (f'{condition}: the default (mmseg-erf chose {ran}) median {ratio:.2f}x the best '
            f'policy\'s: {word} {limit:g}x')


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='benchmark_omp.py',
        description='ERF seconds per image under each OpenMP wait policy, idle and with a '
                    'busy-loop process on one core, side by side.')
    parser.add_argument('--model', default='vmamba-t',
                        help=f'a name ({", ".join(MODEL_TABLE)}) or a config path')
    parser.add_argument('--size', type=int, default=384, help='input side S')
    parser.add_argument('--num-images', type=int, default=3,
                        help='timed images per run (after one untimed warm-up image)')
    parser.add_argument('--targets', nargs='+', default=['backbone.2'])
    parser.add_argument('--repeats', type=int, default=2, help='runs of each policy')
    parser.add_argument('--conditions', nargs='+', choices=['idle', 'busy'],
                        default=['idle', 'busy'])
    parser.add_argument('--policies', nargs='+', choices=POLICIES, default=list(POLICIES))
    parser.add_argument('--threads', type=int, help="torch threads (default torch's)")
    parser.add_argument('--limit', type=float, default=1.2,
                        help='ratio to the best policy the default must stay within')
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    spec = dict(config=MODEL_TABLE.get(args.model, args.model), size=args.size,
                num_images=args.num_images, targets=list(args.targets), threads=args.threads)
    print(f'{args.model} at {args.size}, targets {" ".join(args.targets)}, '
          f'{args.num_images} image(s) per run, {args.repeats} run(s) per policy, '
          f'{os.cpu_count()} CPU cores', flush=True)
    results = {c: measure_condition(c, spec, args.repeats, args.policies,
                                    log=lambda m: print(m, flush=True))
               for c in args.conditions}
    print()
    print('\n'.join(TABLE_HEAD + [row for c, found in results.items()
                                  for row in condition_rows(c, found)]))
    lines = [verdict(c, found, args.limit) for c, found in results.items()]
    print('\n' + '\n'.join(line for line in lines if line))
    failed = any(f['errors'] for found in results.values() for f in found.values())
    return 1 if failed or any('NOT within' in (line or '') for line in lines) else 0
