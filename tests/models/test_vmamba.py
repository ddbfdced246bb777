"""MM_VSSM against VMamba's reference outputs, names and configs (tests/fixtures/vmamba)."""
import json
import logging
import os.path as osp

import pytest
import torch
from mmengine.logging import MMLogger

from mmseg_erf.models import MM_VSSM
from mmseg_erf.models.vmamba.ss2d import cross_merge, cross_scan

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
FIXTURES = osp.join(REPO, 'tests', 'fixtures', 'vmamba')
CONFIGS = osp.join(REPO, 'configs', 'vmamba', 'vssm1')
VARIANTS = ('tiny', 'small', 'base')


def fixture(name):
    return osp.join(FIXTURES, name)


def manifest(variant):
    with open(fixture(f'keys_{variant}.json')) as f:
        return json.load(f)


@pytest.fixture(scope='module')
def mini():
    """The reference's small perturbed model, its weights and its outputs."""
    with open(fixture('vssm_mini_config.json')) as f:
        config = json.load(f)
    state = torch.load(fixture('vssm_mini_state_dict.pt'), map_location='cpu', weights_only=True)
    io = torch.load(fixture('vssm_mini_io.pt'), map_location='cpu', weights_only=True)
    state = {k[len('backbone.'):]: v for k, v in state.items()}
    return config['kwargs'], state, io


def build_mini(mini, **overrides):
    kwargs, state, _ = mini
    model = MM_VSSM(**{**kwargs, **overrides})
    model.load_state_dict(state, strict=True)
    return model.eval()


@pytest.mark.parametrize('variant', VARIANTS)
def test_state_dict_matches_vmamba_manifest(variant):
    spec = manifest(variant)
    with torch.device('meta'):
        model = MM_VSSM(**spec['config'])
    got = [[f'backbone.{k}', list(v.shape)] for k, v in model.state_dict().items()]
    assert got == spec['params']


@pytest.mark.parametrize('scan_backend', ('torch', 'cpu'))
def test_reproduces_reference_stage_outputs(mini, scan_backend):
    model = build_mini(mini, scan_backend=scan_backend)
    io = mini[2]
    with torch.no_grad():
        outs = model(io['input'])
    assert len(outs) == 4
    for i, out in enumerate(outs):
        ref = io[f'out{i}']
        assert out.shape == ref.shape and out.is_contiguous()
        # float32 reruns of the reference differ by ~5e-6 (fixture README)
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-4)
        assert ((out - ref).norm() / ref.norm()) < 1e-5


@pytest.mark.parametrize('scan_backend', ('torch', 'cpu'))
def test_reproduces_reference_erf(mini, scan_backend):
    """Both CPU paths of the scan: PyTorch operations and the compiled kernel."""
    model = build_mini(mini, scan_backend=scan_backend)
    io = mini[2]
    x = io['input'][:1].clone().requires_grad_()
    out = model(x)[3]
    h, w = out.shape[2:]
    grad = torch.autograd.grad(torch.relu(out[:, :, h // 2, w // 2]).sum(), x)[0]
    erf = torch.relu(grad).sum(dim=(0, 1))
    ref = io['erf_stage3']
    torch.testing.assert_close(erf, ref, rtol=0, atol=1e-4)
    assert ((erf - ref).norm() / ref.norm()) < 1e-5


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device (torch.cuda.is_available() is False)')
def test_cuda_outputs_match_cpu(mini):
    """On CUDA the CUDA selective-scan kernel is used when installed, else the PyTorch scan."""
    io = mini[2]
    with torch.no_grad():
        cpu = build_mini(mini)(io['input'])
        cuda = build_mini(mini).cuda()(io['input'].cuda())
    for out, ref in zip(cuda, cpu):
        torch.testing.assert_close(out.cpu(), ref, rtol=0, atol=1e-4)


def test_gradient_checkpointing_gives_the_same_outputs(mini):
    io = mini[2]
    x = io['input'][:1]
    plain = build_mini(mini)
    ckpt = build_mini(mini, use_checkpoint=True)
    xs = [x.clone().requires_grad_() for _ in range(2)]
    grads = []
    for model, xi in zip((plain, ckpt), xs):
        out = model(xi)[2]
        grads.append(torch.autograd.grad(out.square().sum(), xi)[0])
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-6)


def test_cross_scan_orders():
    x = torch.arange(2 * 3 * 4, dtype=torch.float32).view(1, 2, 3, 4).permute(0, 2, 3, 1)
    xs = cross_scan(x)  # (B, H, W, C) -> (B, L, 4, C)
    assert xs.shape == (1, 12, 4, 2)
    rows = x.reshape(1, 12, 2)
    cols = x.transpose(1, 2).reshape(1, 12, 2)
    assert torch.equal(xs[:, :, 0], rows) and torch.equal(xs[:, :, 1], cols)
    assert torch.equal(xs[:, :, 2], rows.flip(1)) and torch.equal(xs[:, :, 3], cols.flip(1))
    assert torch.equal(cross_merge(xs, 3, 4), 4 * x)
    # per direction: direction k reads only its own slice, in its own order
    per = torch.stack([x * (k + 1) for k in range(4)], dim=3)  # (B, H, W, 4, C)
    assert torch.equal(cross_scan(per, per_direction=True), xs * torch.arange(1., 5.)[:, None])


@pytest.mark.parametrize('name,value', [('forward_type', 'v3'), ('forward_type', 'v05'),
                                        ('forward_type', 'v0seq'),
                                        ('ssm_act_layer', 'gelu'), ('gmlp', True),
                                        ('posembed', True), ('ssm_init', 'v1')])
def test_unsupported_variants_are_refused(name, value):
    with pytest.raises(ValueError) as info:
        MM_VSSM(dims=8, depths=(1, 1), **{name: value})
    message = str(info.value)
    assert name in message and repr(value) in message and 'supported' in message


@pytest.mark.parametrize('forward_type,name,value', [
    ('v05_noz', 'downsample_version', 'v1'), ('v05_noz', 'patchembed_version', 'v1'),
    ('v05_noz', 'norm_layer', 'ln'), ('v05_noz', 'mlp_ratio', 0.0),
    ('v0', 'downsample_version', 'v3'), ('v0', 'norm_layer', 'ln2d'),
    ('v0', 'ssm_conv_bias', False), ('v0', 'mlp_ratio', 4.0)])
def test_mixing_the_generations_is_refused(forward_type, name, value):
    first = dict(downsample_version='v1', patchembed_version='v1', norm_layer='ln',
                 ssm_conv_bias=True, mlp_ratio=0.0)
    kwargs = {**(first if forward_type == 'v0' else {}), name: value}
    with pytest.raises(ValueError) as info:
        MM_VSSM(dims=8, depths=(1, 1), forward_type=forward_type, **kwargs)
    message = str(info.value)
    assert f'{name}={value!r}' in message and 'generation' in message


def test_swin_leftovers_and_unknown_arguments_are_refused():
    with pytest.raises(TypeError, match='_delete_=True'):
        MM_VSSM(dims=8, depths=(1, 1), embed_dims=96, window_size=7)
    with pytest.raises(TypeError, match='ssm_dstate'):
        MM_VSSM(dims=8, depths=(1, 1), ssm_dstate=1)
    with pytest.raises(ValueError, match="scan_backend='triton' must be one of"):
        MM_VSSM(dims=8, depths=(1, 1), scan_backend='triton')


def test_vmamba_config_arguments_are_accepted():
    """The kwargs VMamba's classification configs pass, at their released values."""
    model = MM_VSSM(dims=8, depths=(1, 1), out_indices=(0, 1), pretrained='', ssm_act_layer='silu',
                    ssm_drop_rate=0.0, ssm_init='v0', mlp_act_layer='gelu', mlp_drop_rate=0.0,
                    gmlp=False, patch_norm=True, use_checkpoint=False, posembed=False,
                    imgsize=224, patch_size=4, in_chans=3, num_classes=1000)
    assert model.pretrained is None
    outs = model(torch.randn(1, 3, 32, 32))
    assert [o.shape for o in outs] == [(1, 8, 8, 8), (1, 16, 4, 4)]


def classification_checkpoint(mini, drop=()):
    """What VMamba's classification training saves: no outnorm*, a classifier."""
    state = {k: v.clone() for k, v in mini[1].items()
             if not k.startswith('outnorm') and k not in drop}
    state['classifier.norm.weight'] = torch.ones(256)
    state['classifier.head.weight'] = torch.zeros(1000, 256)
    return dict(model=state, epoch=3)


def test_loads_a_classification_checkpoint(mini, tmp_path):
    path = str(tmp_path / 'ckpt_epoch_3.pth')
    torch.save(classification_checkpoint(mini), path)
    kwargs, state, _ = mini
    torch.manual_seed(123)
    model = MM_VSSM(**kwargs)
    outnorm_before = model.outnorm1.weight.clone()
    logger = MMLogger.get_current_instance()
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        report = model.load_pretrained(path)
    finally:
        logger.removeHandler(handler)
    loaded = model.state_dict()
    for key, value in state.items():
        if not key.startswith('outnorm'):
            assert torch.equal(loaded[key], value), key
    assert torch.equal(model.outnorm1.weight, outnorm_before)
    assert sorted(report['missing']) == sorted(k for k in state if k.startswith('outnorm'))
    assert report['unexpected'] == []
    text = '\n'.join(r.getMessage() for r in records)
    assert 'outnorm0.weight' in text and 'classifier' in text


def test_pretrained_is_loaded_by_init_weights(mini, tmp_path):
    path = str(tmp_path / 'ckpt_epoch_3.pth')
    ckpt = classification_checkpoint(mini)
    torch.save(dict(model_ema=ckpt['model']), path)
    kwargs, state, _ = mini
    with pytest.raises(ValueError, match="no weights under 'model'"):
        MM_VSSM(**kwargs).load_pretrained(path)
    model = MM_VSSM(**kwargs, pretrained=path)
    with pytest.raises(ValueError, match='pretrained_key="model" or "model_ema"'):
        model.init_weights()
    model = MM_VSSM(**kwargs)
    model.load_pretrained(path, key='model_ema')
    assert torch.equal(model.layers[1].blocks[0].op.A_logs, state['layers.1.blocks.0.op.A_logs'])
    model = MM_VSSM(**kwargs, pretrained=path, pretrained_key='model_ema')
    model.init_weights()
    assert torch.equal(model.layers[2].blocks[1].op.Ds, state['layers.2.blocks.1.op.Ds'])
    with pytest.raises(ValueError, match="pretrained_key='ema'"):
        MM_VSSM(**kwargs, pretrained=path, pretrained_key='ema')


def test_missing_backbone_weights_raise(mini):
    kwargs = mini[0]
    dropped = ('patch_embed.0.weight', 'layers.2.blocks.1.op.Ds')
    with pytest.raises(ValueError, match='like the checkpoint, but 2 tensors are missing') as info:
        MM_VSSM(**kwargs).load_pretrained(classification_checkpoint(mini, dropped))
    assert 'patch_embed.0.weight' in str(info.value)
    other = {**kwargs, 'ssm_ratio': 1.0}
    with pytest.raises(ValueError, match=r'ssm_ratio 1, with MLP\); it holds a new-generation '
                       r'VMamba \(v2\) backbone \(dims \[32, 64, 128, 256\], depths \[1, 1, 2, 1\], '
                       r'd_state 1, ssm_ratio 2, with MLP\), which no config'):
        MM_VSSM(**other).load_pretrained(classification_checkpoint(mini))


def test_classification_checkpoint_through_the_config(mini, tmp_path):
    """The classification ERF beside the segmentation one: the released config with
    ``model.backbone.pretrained`` set to a local ``ckpt_epoch_*.pth`` loads it into the
    backbone (only downloads are switched off), and the command line says so."""
    import subprocess
    import sys

    from mmseg_erf.segmentor import build_segmentor
    path = str(tmp_path / 'ckpt_epoch_3.pth')
    torch.save(classification_checkpoint(mini), path)
    kwargs, state, _ = mini
    dims = [kwargs['dims'] * 2**i for i in range(4)]
    options = {**{f'model.backbone.{k}': v for k, v in kwargs.items()},
               'model.backbone.pretrained': path, 'model.backbone.drop_path_rate': 0.0,
               'model.decode_head.in_channels': dims, 'model.decode_head.channels': 16,
               'model.auxiliary_head.in_channels': dims[2],
               'model.auxiliary_head.channels': 16}
    config = osp.join(CONFIGS, 'upernet_vssm_4xb4-160k_ade20k-512x512_tiny.py')
    model, _, report = build_segmentor(config, cfg_options=options)
    assert report is None and model.pretrained_files == (path, )
    loaded = model.backbone.state_dict()
    for key, value in state.items():
        if not key.startswith('outnorm'):
            assert torch.equal(loaded[key], value), key
    # with a segmentation checkpoint, the checkpoint decides and nothing is reported
    seg = str(tmp_path / 'seg.pth')
    torch.save(dict(state_dict=model.state_dict(), meta={}), seg)
    assert build_segmentor(config, seg, cfg_options=options)[0].pretrained_files == ()

    images = tmp_path / 'images'
    images.mkdir()
    from PIL import Image
    Image.new('RGB', (64, 64), (120, 80, 40)).save(images / 'a.png')
    cli = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools', 'erf_seg.py'), config, '--img-dir',
         str(images), '--num-images', '1', '--input-size', '64', '--num-workers', '0',
         '--targets', 'backbone.1', '--out-dir', str(tmp_path / 'out'), '--cfg-options',
         *[f'{k}={json.dumps(v).replace(" ", "")}' for k, v in options.items()]],
        capture_output=True, text=True, timeout=600)
    assert cli.returncode == 0, cli.stderr[-3000:]
    assert f'initial weights from {path}' in cli.stdout + cli.stderr
    assert 'RANDOM' not in cli.stdout + cli.stderr
