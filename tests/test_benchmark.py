"""Smoke test of tools/benchmark_erf.py's measuring functions (no timing asserted)."""
import numpy as np
import pytest

from conftest import TINY_CONFIG
from mmseg_erf import benchmark as bench


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    # OpenMP threads spinning at barriers make small models up to 100x slower
    # when other processes share the two cores; one thread has no barriers
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def tiny(one_thread):
    model = bench.load_model(TINY_CONFIG, 'cpu', seed=0)
    return model, bench.make_inputs(model, 1, 64, seed=0)


@pytest.fixture(scope='module')
def ref(tiny):
    return bench.reference_maps(*tiny, bench.TARGETS)


def test_reference_and_session_maps_agree(tiny, ref):
    model, inputs = tiny
    params = {n: p.requires_grad for n, p in model.named_parameters()}
    ours = bench.session_maps(model, inputs, bench.TARGETS, batch_size=1)
    assert list(ref) == list(ours) == list(bench.TARGETS)
    for name in bench.TARGETS:
        assert ref[name].shape == (64, 64) and ref[name].max() > 0
    agreement = bench.map_agreement(ref, ours)
    assert max(agreement.values()) <= 1e-5, agreement
    # parameters come back exactly as they were (the hook runs inside training)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == params


def test_measure_and_flops(tiny, ref):
    spec = dict(config=TINY_CONFIG, size=64, num_images=1, warmup=False, matmul_rate=False,
                threads=1)
    out = bench.measure(dict(spec, variant='b'))
    assert out['per_image'] > 0 and out['rss_peak'] >= out['rss_base'] > 0
    assert len(out['image_times']) == 1 and set(out['maps']) == set(bench.TARGETS)
    model, inputs = tiny
    assert max(bench.map_agreement(ref, out['maps']).values()) <= 1e-5
    flops = bench.count_flops(model, inputs)
    assert flops['a'] > flops['b_dense'] >= flops['b'] > flops['forward'] > 0
    assert flops['a'] - flops['b_dense'] == 4 * flops['full_forward']
    report = dict(model='tiny', size=64, stats={'a': None, 'b': bench.variant_stats([out])},
                  flops=flops, agreement={'decode_head': 0.0})
    assert bench.table_rows(report, 1, 1)[0].startswith('| tiny | 64 | (b)')
    assert bench.ratio_row(report, 1e11).startswith('| tiny | 64 |')


def test_cfg_options_reach_every_run(tiny):
    """``--cfg-options`` (as for the README's gradient-checkpointing figure) is parsed
    and applied to the model each spawned run builds: a wider decode head costs more
    forward FLOPs. Guards the mutation: the option parsed but not passed to the runs."""
    args = bench.build_parser().parse_args(['--cfg-options',
                                            'model.backbone.use_checkpoint=True'])
    assert args.cfg_options == {'model.backbone.use_checkpoint': True}
    spec = dict(config=TINY_CONFIG, size=64, num_images=1, variant='flops', threads=1)
    wide = bench.run_isolated(dict(spec, cfg_options={'model.decode_head.channels': 64}))
    plain = bench.count_flops(*tiny)
    assert wide['flops']['forward'] > plain['forward']


def test_config_table_and_targets():
    assert bench.resolve_config(bench.MODEL_TABLE['r50']) is not None
    assert bench.resolve_config('configs/does_not_exist.py') is None
    with pytest.raises(ValueError):
        bench.reference_maps(None, None, ['neck.0'])
    assert np.isinf(bench.map_agreement({'t': np.zeros(2)}, {'t': np.ones(2)})['t'])


def test_session_restores_parameter_flags_on_error(tiny):
    import torch
    from mmseg_erf.engine import ERFSession
    model, _ = tiny
    frozen = next(model.parameters())
    frozen.requires_grad_(False)
    try:
        before = {n: p.requires_grad for n, p in model.named_parameters()}
        with pytest.raises(RuntimeError):  # 4 channels: the stem convolution fails
            ERFSession(model, ['decode_head'], 1).process(torch.zeros(1, 4, 64, 64))
        assert {n: p.requires_grad for n, p in model.named_parameters()} == before
    finally:
        frozen.requires_grad_(True)


@pytest.mark.parametrize('cin,cout,k,stride,pad,dil,groups,size', [
    (8, 16, 3, 1, 1, 1, 1, 32), (8, 16, 3, 2, 1, 1, 1, 33), (8, 8, 3, 1, 2, 2, 8, 31),
    (4, 6, 1, 1, 0, 1, 1, 40), (6, 4, 7, 2, 3, 1, 2, 64), (3, 5, 4, 4, 0, 1, 1, 64)])
def test_windowed_conv_grads_equal_dense(cin, cout, k, stride, pad, dil, groups, size):
    import torch
    import torch.nn.functional as F
    from mmseg_erf.engine.gradients import WindowedConvGrads
    x = torch.randn(2, cin, size, size, requires_grad=True)
    w = torch.randn(cout, cin // groups, k, k)
    y = F.conv2d(x, w, stride=stride, padding=pad, dilation=dil, groups=groups)
    h, wd = y.shape[-2:]
    for yy, xx in ((h // 2, wd // 2), (0, 0), (h - 1, wd - 1), (1, wd - 2)):
        score = F.relu(y[:, :, yy, xx]).sum() + y[:, :2, yy, xx].sum()
        (dense, ) = torch.autograd.grad(score, x, retain_graph=True)
        with WindowedConvGrads():
            (windowed, ) = torch.autograd.grad(score, x, retain_graph=True)
        assert torch.allclose(windowed, dense, rtol=1e-5, atol=1e-6 * float(dense.abs().max()))
        assert torch.equal(windowed == 0, dense == 0)


def test_scan_benchmark_runs_both_storage_orders():
    """tools/benchmark_scan.py at a small size: a row per storage order and backend
    (PyTorch, the compiled kernel) for d_state 1 and 16 (the two VMamba generations),
    float64 agrees."""
    import re
    import subprocess
    import sys
    from pathlib import Path
    script = Path(__file__).resolve().parents[1] / 'tools' / 'benchmark_scan.py'
    run = subprocess.run([sys.executable, str(script), '--length', '96', '--channels', '8',
                          '--repeats', '1', '--reference-repeats', '1', '--threads', '1'],
                         capture_output=True, text=True, timeout=300, check=True)
    rows = re.findall(r'^(channel-major|token-major \(MM_VSSM\)) +(torch|cpu) .* [\d.]+x / +'
                      r'[\d.]+x$', run.stdout, re.MULTILINE)
    per_state = [(layout, backend) for layout in ('channel-major', 'token-major (MM_VSSM)')
                 for backend in ('torch', 'cpu')]
    assert rows == per_state * 2, run.stdout
    assert len(re.findall(r'^  (channel|token)-major.*, (torch|cpu): output ', run.stdout,
                          re.MULTILINE)) == 8, run.stdout
    assert re.findall(r'B/C \(1, 4, (\d+), 96\)', run.stdout) == ['1', '16'], run.stdout
    worst = [float(e) for e in re.findall(r'max relative error: (\S+)', run.stdout)]
    assert len(worst) == 2 and max(worst) < 1e-12, run.stdout
