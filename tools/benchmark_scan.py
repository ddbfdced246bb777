"""Selective scan: this package's two CPU paths next to the sequential reference.

Times forward + backward of the PyTorch path (``backend='torch'``), the compiled
kernel (``backend='cpu'``) and the reference loop at VMamba-T stage-1 shapes for a 512x512
input (L = 128 * 128 positions, K = 4 directions, batch 1), for both
generations: d_state 1 with D = 96 channels per direction (new VMamba-T) and
d_state 16 with D = 192 (first-generation VMamba-T, ssm_ratio 2), and prints
the speed-ups, then compares outputs and gradients in float64 (at
``--check-length`` positions: the float64 reference at d_state 16 and full
length would need several GiB). Two storage orders of the same
(batch, K*D, L) inputs are timed: channel-major (contiguous, as Mamba's and
VMamba's kernels take them) and token-major (``x.transpose(1, 2)`` of a
contiguous (batch, L, K*D) tensor: what MM_VSSM's SS2D produces and feeds to
the scan). Each is compared with the reference run on the same storage.

    .venv/bin/python tools/benchmark_scan.py            # both d_state values
    .venv/bin/python tools/benchmark_scan.py --d-state 1 --length 4096 --repeats 5

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

# mmseg_erf first: it sets the OpenMP wait policy, which torch's OpenMP reads when it loads
from mmseg_erf.models.vmamba.cpu_kernel import cpu_kernel_available, cpu_kernel_error
from mmseg_erf.models.vmamba.selective_scan import selective_scan, selective_scan_reference

import torch  # noqa: E402,I100

print = functools.partial(print, flush=True)  # noqa: A001 (progress shows in logs)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--length', type=int, default=128 * 128, help='sequence length L')
    parser.add_argument('--channels', type=int, default=None,
                        help='channels D per direction (default: 96 at d_state 1, 192 '
                        'otherwise, VMamba-T of each generation)')
    parser.add_argument('--directions', type=int, default=4, help='scan directions K')
    parser.add_argument('--d-state', type=int, nargs='+', default=[1, 16],
                        help='state sizes N, one table row set each')
    parser.add_argument('--check-length', type=int, default=4096,
                        help='sequence length of the float64 error check')
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--chunk-size', type=int, default=None,
                        help='chunk_size of selective_scan (default: automatic)')
    parser.add_argument('--repeats', type=int, default=7,
                        help='timed runs of the fast scan')
    parser.add_argument('--reference-repeats', type=int, default=3,
                        help='timed runs of the reference loop')
    parser.add_argument('--backends', nargs='+', choices=['torch', 'cpu'], default=['torch', 'cpu'],
                        help="selective_scan backends to time: 'torch' (PyTorch operations) and "
                        "'cpu' (the compiled kernel; left out with a note where it cannot build)")
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


def channel_major(inputs, grad_out):
    """The inputs as make_inputs builds them: contiguous (batch, K*D, L)."""
    return inputs, grad_out


def token_major(inputs, grad_out):
    """The same values as (batch, K*D, L) views of token-major (batch, L, K*D) storage."""
    def stored(x):  # (batch, ..., L) -> same shape over (batch, L, ...) storage
        order = (0, x.dim() - 1, *range(1, x.dim() - 1))
        return x.permute(order).contiguous().permute(0, *range(2, x.dim()), 1)

    sequences = ('u', 'delta', 'B', 'C')
    return ({k: stored(v) if k in sequences else v for k, v in inputs.items()},
            stored(grad_out))


def forward_backward(fn, inputs, grad_out, **kwargs):
    leaves = {k: v.detach().clone(memory_format=torch.preserve_format).requires_grad_()
              for k, v in inputs.items()}
    start = time.perf_counter()
    out = fn(**leaves, delta_softplus=True, **kwargs)
    grads = torch.autograd.grad(out, list(leaves.values()), grad_out)
    return time.perf_counter() - start, out.detach(), dict(zip(leaves, grads))


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    if 'cpu' in args.backends and not cpu_kernel_available():
        print(f'backend cpu left out: {cpu_kernel_error()}')
        args.backends = [b for b in args.backends if b != 'cpu']
    for nstate in args.d_state:
        channels = args.channels or (96 if nstate == 1 else 192)
        benchmark(argparse.Namespace(**{**vars(args), 'd_state': nstate, 'channels': channels}))


def benchmark(args):
    kd = args.directions * args.channels
    print(f'shapes: u/delta ({args.batch}, {kd}, {args.length}), B/C ({args.batch}, '
          f'{args.directions}, {args.d_state}, {args.length}); {args.threads} threads; '
          'forward + backward of every input, float32')

    grad_out = torch.randn(args.batch, kd, args.length,
                           generator=torch.Generator().manual_seed(1))
    layouts = {'channel-major': channel_major, 'token-major (MM_VSSM)': token_major}
    # best and median of the runs: the best is the least disturbed by other tenants
    print(f'{"storage of the inputs":<24}{"backend":>8}{"selective_scan best/median":>30}'
          f'{"reference loop best/median":>30}{"speed-up best/median":>24}')
    for name, store in layouts.items():
        inputs, g = store(make_inputs(args, torch.float32), grad_out)
        slow = [forward_backward(selective_scan_reference, inputs, g)[0]
                for _ in range(args.reference_repeats)]
        for backend in args.backends:
            fast = [forward_backward(selective_scan, inputs, g, chunk_size=args.chunk_size,
                                     backend=backend)[0]
                    for _ in range(args.repeats + 1)][1:]  # the first run warms up
            best = (min(fast), min(slow))
            median = (statistics.median(fast), statistics.median(slow))
            print(f'{name:<24}{backend:>8}{best[0] * 1e3:>14.1f} / {median[0] * 1e3:6.1f} ms'
                  f'{best[1] * 1e3:>16.0f} / {median[1] * 1e3:5.0f} ms'
                  f'{best[1] / best[0]:>15.1f}x / {median[1] / median[0]:4.1f}x')

    check = argparse.Namespace(**{**vars(args), 'length': min(args.length, args.check_length)})
    print(f'float64 error vs the reference at L = {check.length} (max |diff| relative to max '
          '|reference|):')
    worst = 0.0
    for name, store in layouts.items():
        inputs64, g = store(make_inputs(check, torch.float64),
                            grad_out[..., :check.length].double())
        _, ref, ref_grads = forward_backward(selective_scan_reference, inputs64, g)
        for backend in args.backends:
            _, out, grads = forward_backward(selective_scan, inputs64, g,
                                             chunk_size=args.chunk_size, backend=backend)
            errors = {'output': (out, ref), **{f'grad {k}': (grads[k], ref_grads[k])
                                              for k in ref_grads}}
            rels = {k: ((x - r).abs().max() / r.abs().max().clamp(min=1e-300)).item()
                    for k, (x, r) in errors.items()}
            worst = max(worst, *rels.values())
            print(f'  {name}, {backend}: ' + ', '.join(f'{k} {v:.1e}' for k, v in rels.items()))
    print(f'max relative error: {worst:.2e}')


if __name__ == '__main__':
    main()
