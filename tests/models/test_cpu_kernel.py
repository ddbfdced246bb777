"""The compiled CPU selective scan (cpu_scan.c) against the sequential float64 reference.

The kernel needs a C compiler; the suite's set-up has one (mmcv is built from
source), so a missing compiler fails here instead of skipping: the model tests
would otherwise run the PyTorch path only, unnoticed.
"""
import importlib

import pytest
import torch

from mmseg_erf.models.vmamba import cpu_kernel
from mmseg_erf.models.vmamba.selective_scan import (selective_scan, selective_scan_reference,
                                                    selective_scan_tokens)
from test_selective_scan import assert_matches_reference, make_inputs, rel_err, run

scan_module = importlib.import_module('mmseg_erf.models.vmamba.selective_scan')


@pytest.fixture
def fresh_library(monkeypatch, tmp_path):
    """A kernel cache of this test's own, and the loaded libraries forgotten before and after."""
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
    cpu_kernel._library.cache_clear()
    yield tmp_path / 'mmseg-erf' / 'kernels'
    cpu_kernel._library.cache_clear()


def spy_kernel(monkeypatch):
    calls = []
    real = scan_module.cpu_kernel_scan

    def spy(*args):
        calls.append(args[0].shape)
        return real(*args)

    monkeypatch.setattr(scan_module, 'cpu_kernel_scan', spy)
    return calls


def test_the_kernel_builds_here():
    assert cpu_kernel.cpu_kernel_error(torch.float32) is None
    assert cpu_kernel.cpu_kernel_available(torch.float64)


# (batch, K, D, N, L): L below, at and across the 64-position chunks of saved states;
# D of 8 (one block) and 24 (three blocks, and slices of a direction for the threads)
CASES = [
    (1, 4, 8, 1, 1),
    (2, 2, 8, 3, 63),
    (1, 4, 16, 16, 64),
    (2, 4, 24, 16, 150),
    (1, 1, 8, 2, 200),
]


@pytest.mark.parametrize('batch,groups,dim,nstate,length', CASES)
@pytest.mark.parametrize('use_d,use_bias', [(True, True), (False, False)])
def test_matches_sequential_reference(monkeypatch, batch, groups, dim, nstate, length, use_d,
                                      use_bias):
    """Output and every gradient (u, delta, A, B, C, D, delta_bias) in float64.
    Mutations that fail here: dropping the carry between chunks, the entering state
    of a chunk, the skip term D u, or one of the partial dB/dC slices."""
    calls = spy_kernel(monkeypatch)
    inputs = make_inputs(batch, groups, dim, nstate, length, use_d=use_d, use_bias=use_bias)
    grad_out = torch.randn(batch, groups * dim, length, dtype=torch.float64)
    ref, ref_grads = run(selective_scan_reference, inputs, grad_out, delta_softplus=True)
    out, grads = run(selective_scan, inputs, grad_out, delta_softplus=True)
    assert calls, 'backend="auto" did not take the compiled kernel'
    assert_matches_reference(out, grads, ref, ref_grads)


def test_float32_close_to_float64_reference():
    """float32 decays come from the kernel's own exp (a polynomial, ~1 ulp)."""
    inputs = make_inputs(2, 4, 16, 16, 300, seed=1)
    grad_out = torch.randn(2, 64, 300, dtype=torch.float64)
    ref, ref_grads = run(selective_scan_reference, inputs, grad_out, delta_softplus=True)
    out, grads = run(selective_scan, {k: v.float() for k, v in inputs.items()},
                     grad_out.float(), delta_softplus=True, backend='cpu')
    assert out.dtype == torch.float32 and rel_err(out.double(), ref) < 2e-6
    for name, ref_grad in ref_grads.items():
        assert rel_err(grads[name].double(), ref_grad) < 2e-5, name


def test_strong_decays_stay_finite_and_exact():
    """exp(dt A) far below float32's normal range (dt A down to -1e4)."""
    inputs = make_inputs(1, 2, 8, 4, 130, seed=2)
    inputs['delta'] = inputs['delta'].abs() * 50 + 20
    inputs['A'] = inputs['A'] * 50
    grad_out = torch.randn(1, 16, 130, dtype=torch.float64)
    ref, ref_grads = run(selective_scan_reference, inputs, grad_out, delta_softplus=True)
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 2e-6)):
        cast = {k: v.to(dtype) for k, v in inputs.items()}
        out, grads = run(selective_scan, cast, grad_out.to(dtype), delta_softplus=True,
                         backend='cpu')
        assert rel_err(out.double(), ref) < tol
        for name in ('u', 'delta', 'B', 'C', 'D'):
            assert torch.isfinite(grads[name]).all(), name
            assert rel_err(grads[name].double(), ref_grads[name]) < tol * 10, name


def test_thread_count_changes_nothing(monkeypatch):
    """Work split between 1 and 3 threads (different slices of each direction)."""
    inputs = make_inputs(2, 2, 48, 16, 100, seed=3)
    grad_out = torch.randn(2, 96, 100, dtype=torch.float64)
    results, slices = [], []
    threads = torch.get_num_threads()
    try:
        for count in (1, 3):
            torch.set_num_threads(count)
            slices.append(cpu_kernel._slices(48, 2, 16, 8))
            results.append(run(selective_scan, inputs, grad_out, delta_softplus=True,
                               backend='cpu'))
    finally:
        torch.set_num_threads(threads)
    assert slices == [1, 2]  # a whole direction per item, then halves for three threads
    (out1, grads1), (out3, grads3) = results
    assert torch.equal(out1, out3)
    for name in grads1:
        assert rel_err(grads3[name], grads1[name]) < 1e-14, name


def test_token_major_entry_matches_channel_major():
    inputs = make_inputs(1, 4, 8, 16, 70, seed=4)
    channel_major = selective_scan(**inputs, delta_softplus=True, backend='cpu')
    tokens = selective_scan_tokens(inputs['u'].transpose(1, 2), inputs['delta'].transpose(1, 2),
                                   inputs['A'], inputs['B'].permute(0, 3, 1, 2),
                                   inputs['C'].permute(0, 3, 1, 2), inputs['D'],
                                   inputs['delta_bias'], True, backend='cpu')
    assert torch.equal(tokens.transpose(1, 2), channel_major)
    torch_path = selective_scan(**inputs, delta_softplus=True, backend='torch')
    assert rel_err(channel_major, torch_path) < 1e-12


@pytest.mark.parametrize('change,reason', [
    (dict(dim=6), 'multiple of 8'),
    (dict(softplus=False), 'delta_softplus=False'),
    (dict(positive_a=True), 'A <= 0'),
])
def test_inputs_it_cannot_take_go_to_pytorch(monkeypatch, change, reason):
    calls = spy_kernel(monkeypatch)
    inputs = make_inputs(1, 2, change.get('dim', 8), 2, 20)
    if change.get('positive_a'):
        inputs['A'] = inputs['A'].abs() * 0.01
    softplus = change.get('softplus', True)
    out = selective_scan(**inputs, delta_softplus=softplus)
    assert not calls
    assert rel_err(out, selective_scan_reference(**inputs, delta_softplus=softplus)) < 1e-12
    with pytest.raises(ValueError, match=f'backend="cpu" cannot take .*{reason}'):
        selective_scan(**inputs, delta_softplus=softplus, backend='cpu')


@pytest.mark.parametrize('environment,reason', [
    (dict(MMSEG_ERF_CPU_KERNEL='0'), 'MMSEG_ERF_CPU_KERNEL=0'),
    (dict(CC='no-such-compiler'), 'no C compiler'),
    (dict(CC='false'), 'failed on cpu_scan.c'),
])
def test_without_a_compiler_pytorch_runs(monkeypatch, fresh_library, environment, reason):
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert reason in cpu_kernel.cpu_kernel_error(torch.float32)
    assert not cpu_kernel.cpu_kernel_available(torch.float32)
    calls = spy_kernel(monkeypatch)
    inputs = make_inputs(1, 2, 8, 2, 20)
    out = selective_scan(**inputs, delta_softplus=True)
    assert not calls
    assert rel_err(out, selective_scan_reference(**inputs, delta_softplus=True)) < 1e-12
    with pytest.raises(ValueError, match=reason):
        selective_scan(**inputs, delta_softplus=True, backend='cpu')
    assert not list(fresh_library.glob('*.so'))


def test_built_once_then_loaded_from_the_cache(monkeypatch, fresh_library):
    assert cpu_kernel.cpu_kernel_available(torch.float32)
    built = list(fresh_library.glob('cpu_scan_f32_*.so'))
    assert len(built) == 1 and not list(fresh_library.glob('*.so.*'))
    stamp = built[0].stat().st_mtime_ns
    cpu_kernel._library.cache_clear()
    real_run = cpu_kernel.subprocess.run

    def version_only(command, **kwargs):
        assert command[1:] == ['--version'], f'compiled again: {command}'
        return real_run(command, **kwargs)

    monkeypatch.setattr(cpu_kernel.subprocess, 'run', version_only)
    assert cpu_kernel.cpu_kernel_available(torch.float32)
    assert built[0].stat().st_mtime_ns == stamp


def test_frozen_state_matrix_skips_its_gradient_only():
    """An ERF freezes the parameters: the kernel then skips dA (a branch of its
    innermost loop) and every other gradient stays exact."""
    inputs = make_inputs(2, 2, 16, 16, 100, seed=5)
    grad_out = torch.randn(2, 32, 100, dtype=torch.float64)
    frozen = {k: v for k, v in inputs.items() if k != 'A'}

    def scan(fn, **kwargs):
        return lambda **leaves: fn(**leaves, A=inputs['A'], delta_softplus=True, **kwargs)

    ref, ref_grads = run(scan(selective_scan_reference), frozen, grad_out)
    out, grads = run(scan(selective_scan, backend='cpu'), frozen, grad_out)
    assert rel_err(out, ref) < 1e-12 and set(grads) == set(ref_grads) == set(frozen)
    for name, ref_grad in ref_grads.items():
        assert rel_err(grads[name], ref_grad) < 1e-12, name


def test_small_step_sizes_keep_their_gradient_in_float32():
    """VMamba starts from step sizes of 1e-3 to 1e-1; softplus's slope there is
    -expm1(-dt) ~ dt, which 1 - exp(-dt) would round away in float32."""
    inputs = make_inputs(1, 2, 8, 16, 96, seed=6)
    inputs['delta'] = inputs['delta'] * 0.5 - 8.0  # softplus: about 1e-4 to 1e-3
    grad_out = torch.randn(1, 16, 96, dtype=torch.float64)
    ref, ref_grads = run(selective_scan_reference, inputs, grad_out, delta_softplus=True)
    out, grads = run(selective_scan, {k: v.float() for k, v in inputs.items()},
                     grad_out.float(), delta_softplus=True, backend='cpu')
    for name in ('delta', 'delta_bias'):
        assert rel_err(grads[name].double(), ref_grads[name]) < 1e-5, name


def _scan_in_child(queue):
    torch.set_num_threads(2)
    inputs = make_inputs(1, 2, 16, 4, 40, seed=7)
    queue.put(selective_scan(**inputs, delta_softplus=True, backend='cpu').sum().item())


def test_a_forked_process_gets_its_own_threads():
    """A child forked after the parent's pool started (a dataloader worker, a rank)
    inherits the pool object but not its threads; reusing it would hang forever.
    Mutation that fails here: one pool per size only (no process id in its key)."""
    import multiprocessing
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        inputs = make_inputs(1, 2, 16, 4, 40, seed=7)
        expected = selective_scan(**inputs, delta_softplus=True, backend='cpu').sum().item()
        queue = multiprocessing.get_context('fork').Queue()
        child = multiprocessing.get_context('fork').Process(target=_scan_in_child,
                                                            args=(queue, ))
        child.start()
        child.join(60)
        hung = child.is_alive()
        if hung:
            child.kill()
        assert not hung, 'the forked scan did not finish'
        assert queue.get(timeout=5) == pytest.approx(expected, rel=1e-12)
    finally:
        torch.set_num_threads(threads)
