"""First-generation MM_VSSM (forward_type 'v0') against VMamba's reference fixtures
(tests/fixtures/vmamba/v0, copied from ../shared/fixtures/vmamba/v0; see its README)."""
import json
import logging
import os.path as osp

import pytest
import torch
from mmengine.logging import MMLogger

from mmseg_erf.engine import ERFSession
from mmseg_erf.models import MM_VSSM
from mmseg_erf.models.vmamba import SS2DGated, SS2DGatedV2Order

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
FIXTURES = osp.join(REPO, 'tests', 'fixtures', 'vmamba', 'v0')


def fixture(name):
    return osp.join(FIXTURES, name)


def strip(state):
    return {k[len('backbone.'):]: v for k, v in state.items()}


@pytest.fixture(scope='module')
def mini():
    with open(fixture('vssm0_mini_config.json')) as f:
        kwargs = json.load(f)['kwargs']
    load = lambda name: torch.load(fixture(name), map_location='cpu', weights_only=True)  # noqa
    return (kwargs, load('vssm0_mini_state_dict.pt'), load('vssm0_mini_state_dict_oldnames.pt'),
            load('vssm0_mini_io.pt'))


def build(kwargs, state, **overrides):
    model = MM_VSSM(**{**kwargs, **overrides})
    model.load_state_dict(strip(state), strict=True)
    return model.eval()


def relative_error(x, ref):
    return ((x - ref).abs().max() / ref.abs().max()).item()


@pytest.mark.parametrize('variant', ('tiny', 'small', 'base'))
def test_parameters_equal_the_manifest_in_order(variant):
    with open(fixture(f'keys_v0_{variant}.json')) as f:
        spec = json.load(f)
    with torch.device('meta'):
        model = MM_VSSM(**spec['config'])
    assert [[f'backbone.{k}', list(v.shape)] for k, v in model.state_dict().items()] \
        == spec['params']


@pytest.mark.parametrize('scan_backend', ('torch', 'cpu'))
def test_reproduces_the_reference_stage_outputs_and_erf(mini, scan_backend):
    """Outputs within 1e-5 of each tensor's max (float32 noise is ~3e-6 there), with
    both CPU paths of the scan (PyTorch operations, the compiled kernel).

    Mutations that fail it (fixture README's sensitivity table): dropping silu(z),
    gating before out_norm, swapping the patch-merging quadrants x1/x2, LayerNorm
    eps 1e-6."""
    kwargs, state, _, io = mini
    model = build(kwargs, state, scan_backend=scan_backend)
    with torch.no_grad():
        outs = model(io['input'])
    assert len(outs) == 4
    for i, out in enumerate(outs):
        ref = io[f'out{i}']
        assert out.shape == ref.shape and out.is_contiguous()
        assert relative_error(out, ref) < 1e-5, i
    x = io['input'][:1].clone().requires_grad_()
    out = model(x)[3]
    h, w = out.shape[2:]
    grad = torch.autograd.grad(torch.relu(out[:, :, h // 2, w // 2]).sum(), x)[0]
    # the reference ERF itself carries float32 noise of ~3e-5 of its max
    assert relative_error(torch.relu(grad).sum(dim=(0, 1)), io['erf_stage3']) < 1e-4


def test_erf_through_the_engine_session(mini):
    """The stage-3 ERF of the fixture computed by the engine's ERFSession (the loop every
    door shares), not by an inline recipe."""
    kwargs, state, _, io = mini
    session = ERFSession(build(kwargs, state), ['outnorm3'], num_images=1)
    assert session.process(io['input']) == 1  # only position 0 is wanted
    result = session.result()
    erf = torch.from_numpy(result.map('outnorm3')).float()
    assert result.num_images == 1 and erf.shape == (64, 64)
    assert relative_error(erf, io['erf_stage3']) < 1e-4


def test_january_2024_names_load_strictly_and_the_log_says_so(mini):
    kwargs, state, old, io = mini
    assert any('self_attention' in k for k in old) and list(strip(old)) != list(strip(state))
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        model = MM_VSSM(**kwargs)
        model.load_state_dict(strip(old), strict=True)
    finally:
        logger.removeHandler(handler)
    reference = strip(state)
    for key, value in model.state_dict().items():
        assert torch.equal(value, reference[key]), key
    text = '\n'.join(r.getMessage() for r in records)
    assert 'renamed 69 parameters' in text and 'January 2024' in text


def test_january_2024_names_under_a_segmentor_prefix(mini):
    """mmseg checkpoints hold ``backbone.``-prefixed names: the rename works under the
    prefix, through torch's and this package's loaders."""
    from mmseg_erf.checkpoint import load_model_weights
    kwargs, state, old, _ = mini
    holder = torch.nn.Module()
    holder.backbone = MM_VSSM(**kwargs)
    holder.load_state_dict(dict(old), strict=True)
    fresh = torch.nn.Module()
    fresh.backbone = MM_VSSM(**kwargs)
    report = load_model_weights(fresh, {'state_dict': dict(old)}, strict=True)
    assert report.missing_keys == () and report.unexpected_keys == ()
    for key, value in holder.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value) and torch.equal(value, state[key])


def test_forward_type_v2_is_the_same_model_in_vmamba_v2_order(mini):
    """VMamba's released configs leave forward_type at 'v2': same names, shapes and
    outputs; out_norm comes before in_proj in the state dict, as in VMamba's SS2Dv2."""
    kwargs, state, _, io = mini
    v0, v2 = build(kwargs, state), build(kwargs, state, forward_type='v2')
    assert isinstance(v0.layers[0].blocks[0].op, SS2DGated)
    assert isinstance(v2.layers[0].blocks[0].op, SS2DGatedV2Order)
    names = [k for k in v2.state_dict() if k.startswith('layers.0.blocks.0.op.')]
    assert names.index('layers.0.blocks.0.op.out_norm.weight') < \
        names.index('layers.0.blocks.0.op.in_proj.weight')
    assert sorted(v2.state_dict()) == sorted(v0.state_dict())
    with torch.no_grad():
        for a, b in zip(v0(io['input']), v2(io['input'])):
            assert torch.equal(a, b)


def test_odd_sizes_are_padded_before_patch_merging(mini):
    kwargs, state, _, _ = mini
    with torch.no_grad():
        outs = build(kwargs, state)(torch.randn(1, 3, 36, 44))  # 9 x 11 after the embedding
    assert [tuple(o.shape[2:]) for o in outs] == [(9, 11), (5, 6), (3, 3), (2, 2)]


def test_gradient_checkpointing_gives_the_same_gradients(mini):
    kwargs, state, _, io = mini
    grads = []
    for flag in (False, True):
        x = io['input'][:1].clone().requires_grad_()
        out = build(kwargs, state, use_checkpoint=flag)(x)[2]
        grads.append(torch.autograd.grad(out.square().sum(), x)[0])
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-6)
