"""The pure-PyTorch selective scan against the sequential float64 reference.

Channels per direction here are not multiples of 8 (or the backend is named), so
``backend='auto'`` takes the PyTorch path; the compiled kernel has test_cpu_kernel.py.
"""
import importlib

import pytest
import torch

from mmseg_erf.models import selective_scan
from mmseg_erf.models.vmamba.cuda_scan import cuda_backend_available
from mmseg_erf.models.vmamba.selective_scan import (linear_scan, selective_scan_reference,
                                                    selective_scan_tokens)


def make_inputs(batch, groups, dim, nstate, length, dtype=torch.float64, seed=0,
                delta_scale=0.5, use_d=True, use_bias=True):
    """Random scan inputs; ``use_d=False`` / ``use_bias=False`` leave D / delta_bias None."""
    g = torch.Generator().manual_seed(seed)
    kd = groups * dim

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)

    return dict(
        u=randn(batch, kd, length),
        delta=randn(batch, kd, length) * delta_scale,
        A=-(torch.rand(kd, nstate, generator=g, dtype=dtype) * 2 + 0.1),
        B=randn(batch, groups, nstate, length),
        C=randn(batch, groups, nstate, length),
        D=randn(kd) if use_d else None,
        delta_bias=randn(kd) * 0.5 if use_bias else None,
    )


def run(fn, inputs, grad_out, **kwargs):
    leaves = {k: v.clone().requires_grad_() for k, v in inputs.items() if v is not None}
    out = fn(**leaves, **kwargs)
    grads = torch.autograd.grad(out, list(leaves.values()), grad_out)
    return out, dict(zip(leaves, grads))


def rel_err(x, ref):
    return ((x - ref).abs().max() / ref.abs().max().clamp(min=1e-30)).item()


def assert_matches_reference(out, grads, ref, ref_grads, tol=1e-12):
    """Output and every gradient within ``tol`` of the reference's largest value; a
    gradient that is zero in the reference (A's when L == 1) must be zero."""
    assert out.shape == ref.shape and out.dtype == torch.float64
    assert rel_err(out, ref) < tol
    assert set(grads) == set(ref_grads)
    for name, ref_grad in ref_grads.items():
        if ref_grad.abs().max() == 0:
            assert grads[name].abs().max() == 0, name
        else:
            assert rel_err(grads[name], ref_grad) < tol, name


# (batch, K, D, N, L, chunk): L never a multiple of the chunk, chunk 1 and chunk > L included
CASES = [
    (2, 4, 3, 1, 37, 8),
    (1, 2, 5, 3, 100, 16),
    (3, 4, 2, 4, 129, None),
    (2, 1, 4, 2, 1, 8),
    (1, 2, 3, 2, 23, 1),
    (2, 2, 3, 1, 50, 64),
    (1, 4, 3, 16, 70, 16),  # the first VMamba generation's d_state, states recomputed
]


@pytest.mark.parametrize('batch,groups,dim,nstate,length,chunk', CASES)
@pytest.mark.parametrize('use_d,use_bias,softplus', [(True, True, True), (False, False, False),
                                                     (True, False, True), (False, True, False)])
def test_matches_sequential_reference(batch, groups, dim, nstate, length, chunk, use_d, use_bias,
                                      softplus):
    inputs = make_inputs(batch, groups, dim, nstate, length, use_d=use_d, use_bias=use_bias)
    grad_out = torch.randn(batch, groups * dim, length, dtype=torch.float64)
    ref, ref_grads = run(selective_scan_reference, inputs, grad_out, delta_softplus=softplus)
    out, grads = run(selective_scan, inputs, grad_out, delta_softplus=softplus, chunk_size=chunk)
    assert_matches_reference(out, grads, ref, ref_grads)


def test_gradcheck():
    inputs = make_inputs(1, 2, 2, 2, 11, seed=3)
    names = list(inputs)

    def fn(*args):
        return selective_scan(**dict(zip(names, args)), delta_softplus=True, chunk_size=4)

    args = tuple(v.clone().requires_grad_() for v in inputs.values())
    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-7)


def test_float32_close_to_float64_reference():
    inputs = make_inputs(2, 4, 8, 1, 300, dtype=torch.float64, seed=1)
    ref = selective_scan_reference(**inputs, delta_softplus=True)
    out = selective_scan(**{k: v.float() for k, v in inputs.items()}, delta_softplus=True,
                         chunk_size=64, backend='torch')
    assert out.dtype == torch.float32
    assert rel_err(out.double(), ref) < 2e-6


def test_strong_decay_is_stable():
    """Decays of exp(-1000) per step overflow exp(-cumsum) schemes; ours stay exact."""
    inputs = make_inputs(1, 2, 4, 2, 200, seed=2)
    inputs['delta'] = inputs['delta'].abs() * 50 + 20  # softplus(delta) ~ 20..120
    inputs['A'] = inputs['A'] * 10
    grad_out = torch.randn(1, 8, 200, dtype=torch.float64)
    ref, ref_grads = run(selective_scan_reference, inputs, grad_out, delta_softplus=True)
    for dtype in (torch.float64, torch.float32):
        cast = {k: v.to(dtype) for k, v in inputs.items()}
        out, grads = run(selective_scan, cast, grad_out.to(dtype), delta_softplus=True,
                         chunk_size=32)
        assert torch.isfinite(out).all()
        assert all(torch.isfinite(g).all() for g in grads.values())
        tol = 1e-12 if dtype == torch.float64 else 2e-6
        assert rel_err(out.double(), ref) < tol
        for name in ('u', 'delta', 'B', 'C'):
            assert rel_err(grads[name].double(), ref_grads[name]) < tol * 10, name


def test_chunk_size_does_not_change_the_result():
    inputs = make_inputs(2, 2, 3, 2, 45, seed=4)
    outs = [selective_scan(**inputs, delta_softplus=True, chunk_size=c) for c in (1, 2, 7, 45, 64)]
    with torch.no_grad():  # keeps one chunk of states instead of all
        outs += [selective_scan(**inputs, delta_softplus=True, chunk_size=c) for c in (1, 7)]
    for out in outs[1:]:
        assert rel_err(out, outs[0]) < 1e-13


def test_token_major_entry_point_matches():
    inputs = make_inputs(2, 4, 3, 1, 30, seed=5)
    ref = selective_scan(**inputs, delta_softplus=True)
    tokens = selective_scan_tokens(inputs['u'].transpose(1, 2), inputs['delta'].transpose(1, 2),
                                   inputs['A'], inputs['B'].permute(0, 3, 1, 2),
                                   inputs['C'].permute(0, 3, 1, 2), inputs['D'],
                                   inputs['delta_bias'], True, chunk_size=8)
    assert rel_err(tokens.transpose(1, 2), ref) < 1e-13


scan_module = importlib.import_module('mmseg_erf.models.vmamba.torch_scan')


def spy_closed_forms(monkeypatch):
    """Counts (calls, successes) of the two closed-form scans."""
    counts = {}
    for name in ('closed_form_scan', 'closed_form_adjoint'):
        real = getattr(scan_module, name)
        counts[name] = [0, 0]

        def spy(*args, _real=real, _count=counts[name]):
            done = _real(*args)
            _count[0] += 1
            _count[1] += done
            return done

        monkeypatch.setattr(scan_module, name, spy)
    return counts


@pytest.mark.parametrize('nstate,length,chunk', [(1, 64, None), (2, 64, None), (2, 80, 32)])
def test_closed_form_tiles_match_reference(monkeypatch, nstate, length, chunk):
    """Channel-major tiles narrower than a direction (several tiles add into the
    same dB, dC), scanned in closed form both ways; the last, shorter chunk of
    L=80 takes the prefix scan."""
    batch = 2
    monkeypatch.setattr(scan_module, 'AUTO_CHUNK_ELEMENTS', batch * 64 * nstate * 2)
    counts = spy_closed_forms(monkeypatch)
    inputs = make_inputs(batch, 2, 6, nstate, length, seed=6)
    grad_out = torch.randn(batch, 12, length, dtype=torch.float64)
    ref, ref_grads = run(selective_scan_reference, inputs, grad_out, delta_softplus=True)
    out, grads = run(selective_scan, inputs, grad_out, delta_softplus=True, chunk_size=chunk)
    assert scan_module._tile_width(inputs['u'].transpose(1, 2), 6, chunk or length, nstate) < 6
    assert counts['closed_form_scan'][1] > 0 and counts['closed_form_adjoint'][1] > 0
    assert rel_err(out, ref) < 1e-12
    for name, ref_grad in ref_grads.items():
        assert rel_err(grads[name], ref_grad) < 1e-12, name


def test_closed_form_falls_back_where_decays_are_strong(monkeypatch):
    """Strong decays in the first half of the sequence only: those blocks go to the
    prefix scan, the rest stay in closed form, and float32 stays accurate."""
    counts = spy_closed_forms(monkeypatch)
    inputs = make_inputs(1, 2, 4, 1, 256, seed=7)
    inputs['delta'][..., :128] = inputs['delta'][..., :128].abs() * 20 + 30
    grad_out = torch.randn(1, 8, 256, dtype=torch.float64)
    ref, ref_grads = run(selective_scan_reference, inputs, grad_out, delta_softplus=True)
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 2e-6)):
        cast = {k: v.to(dtype) for k, v in inputs.items()}
        out, grads = run(selective_scan, cast, grad_out.to(dtype), delta_softplus=True,
                         chunk_size=64)
        assert rel_err(out.double(), ref) < tol
        for name in ('u', 'delta', 'B', 'C', 'D'):
            assert rel_err(grads[name].double(), ref_grads[name]) < tol * 10, name
    for calls, done in counts.values():
        assert 0 < done < calls


def test_backward_keeps_step_sizes_not_delta():
    """With softplus, autograd holds the step sizes and states, not delta as well:
    one more (L, K*D) tensor per VMamba block alive until backward."""
    inputs = {k: v.clone().requires_grad_() for k, v in make_inputs(1, 2, 3, 1, 20).items()}
    delta = inputs['delta']
    node = selective_scan(**inputs, delta_softplus=True).grad_fn
    while not hasattr(node, 'saved_tensors'):  # past the transpose back to (batch, K*D, L)
        node = node.next_functions[0][0]
    held = [t.untyped_storage().data_ptr() for t in node.saved_tensors if t is not None]
    assert delta.untyped_storage().data_ptr() not in held
    assert inputs['u'].untyped_storage().data_ptr() in held


@pytest.mark.parametrize('length', [1, 2, 3, 8, 13, 64])
@pytest.mark.parametrize('reverse', [False, True])
def test_linear_scan(length, reverse):
    a = torch.rand(2, length, 3, dtype=torch.float64)
    b = torch.randn(2, length, 3, dtype=torch.float64)
    h, expected = torch.zeros(2, 3, dtype=torch.float64), torch.empty_like(b)
    for t in (reversed(range(length)) if reverse else range(length)):
        h = a[:, t] * h + b[:, t]
        expected[:, t] = h
    assert torch.allclose(linear_scan(a, b, reverse=reverse), expected, rtol=1e-13, atol=1e-13)
    inplace = b.clone()
    linear_scan(a, inplace, out=inplace, reverse=reverse)
    assert torch.allclose(inplace, expected, rtol=1e-13, atol=1e-13)


def test_bad_inputs_are_named():
    inputs = make_inputs(1, 2, 3, 1, 10)
    with pytest.raises(ValueError, match='A must be'):
        selective_scan(**{**inputs, 'A': inputs['A'][:5]})
    with pytest.raises(ValueError, match='B must be'):
        selective_scan(**{**inputs, 'B': inputs['B'][..., :9]})
    with pytest.raises(ValueError, match='delta_bias must be'):
        selective_scan(**{**inputs, 'delta_bias': inputs['delta_bias'][:2]})
    with pytest.raises(ValueError, match='chunk_size'):
        selective_scan(**inputs, chunk_size=0)
    with pytest.raises(ValueError, match="backend='triton'"):
        selective_scan(**inputs, backend='triton')
    if not cuda_backend_available():
        with pytest.raises(ValueError, match='backend="cuda"'):
            selective_scan(**inputs, backend='cuda')


@pytest.mark.skipif(not cuda_backend_available(), reason='needs a CUDA device and a CUDA selective-scan kernel '
                    '(selective_scan_cuda_oflex, selective_scan_cuda or mamba_ssm)')
def test_cuda_kernel_matches_reference():
    inputs = make_inputs(2, 4, 16, 1, 257, dtype=torch.float32)
    grad_out = torch.randn(2, 64, 257)
    ref, ref_grads = run(selective_scan, inputs, grad_out, delta_softplus=True, backend='torch')
    cuda = {k: v.cuda() for k, v in inputs.items()}
    out, grads = run(selective_scan, cuda, grad_out.cuda(), delta_softplus=True, backend='cuda')
    assert rel_err(out.cpu(), ref) < 1e-4
    for name, ref_grad in ref_grads.items():
        assert rel_err(grads[name].cpu(), ref_grad) < 1e-3, name


@pytest.mark.parametrize('layout', ('channel-major', 'token-major'))
def test_many_states_are_recomputed_not_kept(layout):
    """With N > 1 states per channel only the states entering each tile are kept for
    backward (the full (batch, L, K*D, N) states would be N times the inputs); the
    gradients stay exact. Mutation: keeping the full states (``full = keep``) fails."""
    batch, groups, dim, nstate, length = 1, 2, 4, 16, 96
    inputs = make_inputs(batch, groups, dim, nstate, length)
    if layout == 'token-major':
        inputs = {k: v.transpose(1, 2).contiguous().transpose(1, 2) if v.dim() == 3 else v
                  for k, v in inputs.items()}
    saved = []

    def pack(tensor):
        saved.append(tensor.numel())
        return tensor

    grad_out = torch.randn(batch, groups * dim, length, dtype=torch.float64)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out, grads = run(selective_scan, inputs, grad_out, delta_softplus=True, chunk_size=32)
    assert saved and max(saved) < batch * length * groups * dim * nstate
    ref, ref_grads = run(selective_scan_reference, inputs, grad_out, delta_softplus=True)
    assert rel_err(out, ref) < 1e-12
    for name, ref_grad in ref_grads.items():
        assert rel_err(grads[name], ref_grad) < 1e-10, name
