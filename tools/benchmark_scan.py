"""Selective scan: this package's parallel scan next to the sequential reference.

Times forward + backward of both at VMamba-T stage-1 shapes for a 512x512
input (L = 128 * 128 positions, K = 4 directions, D = 96 channels per
direction, d_state 1, batch 1) and prints the speed-up, then compares
outputs and gradients in float64.

    .venv/bin/python tools/benchmark_scan.py            # ~20 s on 2 idle cores
    .venv/bin/python tools/benchmark_scan.py --length 4096 --repeats 5

The reference is ``selective_scan_reference``, the loop the tests compare
against: one Python iteration per position, with per-position tensors taken
by ``unbind`` so that its backward stays linear in L. (A loop that indexes
``x[..., t]`` instead, as VMamba's own fallback does, has a quadratic backward
and is far slower at this length.) Timings on a shared machine vary a lot;
compare runs made back to back.
"""
import argparse
import functools
import math
import statistics
import time

import torch

from mmseg_erf.models.vmamba.selective_scan import selective_scan, selective_scan_reference

print = functools.partial(print, flush=True)  # noqa: A001 (progress shows in logs)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--length', type=int, default=128 * 128, help='sequence length L')
    parser.add_argument('--channels', type=int, default=96, help='channels D per direction')
    parser.add_argument('--directions', type=int, default=4, help='scan directions K')
    parser.add_argument('--d-state', type=int, default=1, help='state size N')
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--chunk-size', type=int, default=None,
                        help='chunk_size of selective_scan (default: automatic)')
    parser.add_argument('--repeats', type=int, default=7, help="timed runs of the fast scan (median)")
    parser.add_argument('--threads', type=int, default=2, help='torch.set_num_threads')
    parser.add_argument('--seed', type=int, default=0)
    return parser.parse_args()


def make_inputs(args, dtype):
    """Inputs with VMamba's initial statistics (A = -1, softplus(bias) in [1e-3, 0.1])."""
    g = torch.Generator().manual_seed(args.seed)
    kd, length, n = args.directions * args.channels, args.length, args.d_state

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    dt = torch.exp(torch.rand(kd, generator=g, dtype=torch.float64) *
                   (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
    inputs = dict(
        u=randn(args.batch, kd, length),
        delta=randn(args.batch, kd, length) * 0.5,
        A=-torch.exp(randn(kd, n) * 0.5),
        B=randn(args.batch, args.directions, n, length),
        C=randn(args.batch, args.directions, n, length),
        D=torch.ones(kd, dtype=torch.float64),
        delta_bias=dt + torch.log(-torch.expm1(-dt)),
    )
    return {k: v.to(dtype) for k, v in inputs.items()}


def forward_backward(fn, inputs, grad_out, **kwargs):
    leaves = {k: v.clone().requires_grad_() for k, v in inputs.items()}
    start = time.perf_counter()
    out = fn(**leaves, delta_softplus=True, **kwargs)
    grads = torch.autograd.grad(out, list(leaves.values()), grad_out)
    return time.perf_counter() - start, out.detach(), dict(zip(leaves, grads))


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    kd = args.directions * args.channels
    print(f'shapes: u/delta ({args.batch}, {kd}, {args.length}), B/C ({args.batch}, '
          f'{args.directions}, {args.d_state}, {args.length}); {args.threads} threads; '
          'forward + backward of every input')

    inputs = make_inputs(args, torch.float32)
    grad_out = torch.randn(args.batch, kd, args.length, generator=torch.Generator().manual_seed(1))
    fast = [forward_backward(selective_scan, inputs, grad_out, chunk_size=args.chunk_size)[0]
            for _ in range(args.repeats + 1)][1:]  # the first run warms up
    slow = forward_backward(selective_scan_reference, inputs, grad_out)[0]
    t_fast = statistics.median(fast)
    print(f'{"implementation":<34}{"float32 fwd+bwd":>18}')
    print(f'{"selective_scan (parallel, chunked)":<34}{t_fast * 1e3:>15.1f} ms')
    print(f'{"selective_scan_reference (loop)":<34}{slow * 1e3:>15.1f} ms')
    print(f'speed-up: {slow / t_fast:.1f}x')

    inputs64 = make_inputs(args, torch.float64)
    _, out, grads = forward_backward(selective_scan, inputs64, grad_out.double(),
                                     chunk_size=args.chunk_size)
    _, ref, ref_grads = forward_backward(selective_scan_reference, inputs64, grad_out.double())
    print('float64 error vs the reference (max |diff|, and relative to max |reference|):')
    worst = 0.0
    for name, x, r in [('output', out, ref)] + [(f'grad {k}', grads[k], ref_grads[k])
                                               for k in ref_grads]:
        diff = (x - r).abs().max().item()
        rel = diff / max(r.abs().max().item(), 1e-300)
        worst = max(worst, rel)
        print(f'  {name:<18} max abs {diff:.2e}   rel {rel:.2e}')
    print(f'max relative error: {worst:.2e}')


if __name__ == '__main__':
    main()
