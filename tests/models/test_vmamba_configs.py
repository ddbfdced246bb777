"""Every config under configs/vmamba: it builds, equals its VMamba manifest, loads a
checkpoint made from the manifest strictly, and a wrong config names the right one."""
import glob
import json
import os.path as osp
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

import mmseg_erf  # noqa: F401
from mmseg_erf.checkpoint import CheckpointMismatchError, load_model_weights
from mmseg_erf.models.vmamba.detect import architecture_of, matching_configs

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
FIXTURES = osp.join(REPO, 'tests', 'fixtures', 'vmamba')
P = 'upernet_vssm_4xb4-160k_ade20k'
# config -> (manifest, crop size, decode-head classes, drop_path_rate): VMamba's files
# as the fixture README's table reads them
RELEASES = {
    f'vssm1/{P}-512x512_tiny.py': ('keys_tiny.json', 512, 150, 0.2),
    f'vssm1/{P}-512x512_tiny1.py': ('keys_tiny1.json', 512, 150, 0.2),
    f'vssm1/{P}-512x512_small.py': ('keys_small.json', 512, 150, 0.3),
    f'vssm1/{P}-512x512_base.py': ('keys_base.json', 512, 150, 0.6),
    f'vssm1/{P}-640x640_small.py': ('keys_small.json', 640, 150, 0.3),
    f'vssm1/{P}-896x896_small.py': ('keys_small.json', 896, 19, 0.3),
    f'vssm/{P}-512x512_tiny.py': ('v0/keys_v0_tiny.json', 512, 150, 0.3),
    f'vssm/{P}-512x512_small.py': ('v0/keys_v0_small.json', 512, 150, 0.3),
    f'vssm/{P}-512x512_base.py': ('v0/keys_v0_base.json', 512, 150, 0.3),
    f'vssm/{P}-640x640_small.py': ('v0/keys_v0_small.json', 640, 150, 0.3),
    f'vssm/{P}-896x896_small.py': ('v0/keys_v0_small.json', 896, 19, 0.3),
}


def config_path(name):
    return osp.join(REPO, 'configs', 'vmamba', name)


def manifest(name):
    with open(osp.join(FIXTURES, name)) as f:
        return json.load(f)


def manifest_state(spec, old_names=False, device='cpu'):
    """Zeros of the manifest's shapes (January 2024 names and order on request)."""
    shapes = dict(spec['params'])
    names = [(old, spec['old_to_new'][old]) for old in spec['old_names']] if old_names else \
        [(name, name) for name in shapes]
    return {name: torch.zeros(shapes[new], device=device) for name, new in names}


def manifest_shapes(spec, old_names=False):
    return {k: tuple(v.shape) for k, v in manifest_state(spec, old_names, 'meta').items()}


def test_every_config_is_listed():
    found = {osp.relpath(p, config_path('')) for p in glob.glob(config_path('vssm*/*.py'))}
    assert found == set(RELEASES)


@pytest.mark.parametrize('name', sorted(RELEASES))
def test_config_builds_its_manifest_and_loads_it_strictly(name):
    from mmseg.registry import MODELS
    keys, crop, classes, drop_path = RELEASES[name]
    spec = manifest(keys)
    init_default_scope('mmseg')
    cfg = Config.fromfile(config_path(name))
    backbone = cfg.model.backbone
    assert backbone.type == 'mmseg_erf.MM_VSSM' and backbone.pretrained is None
    for key, value in spec['config'].items():
        assert backbone[key] == (tuple(value) if isinstance(value, list) else value), key
    assert backbone.drop_path_rate == drop_path
    assert cfg.crop_size == (crop, crop) and cfg.model.data_preprocessor.size == (crop, crop)
    assert cfg.test_dataloader.dataset.pipeline[1].scale == (4 * crop, crop)
    assert cfg.model.decode_head.num_classes == classes
    with torch.device('meta'):
        model = MODELS.build(cfg.model)
    assert type(model.backbone).__module__.startswith('mmseg_erf.')
    got = [[k, list(v.shape)] for k, v in model.state_dict().items() if k.startswith('backbone.')]
    assert got == spec['params']
    assert list(cfg.model.decode_head.in_channels) == model.backbone.dims
    assert cfg.model.auxiliary_head.in_channels == model.backbone.dims[2]
    # strict load of the manifest's tensors (old names too for the first generation)
    heads = {k: torch.zeros(v.shape, device='meta') for k, v in model.state_dict().items()
             if not k.startswith('backbone.')}
    for old in (False, True) if 'old_names' in spec else (False, ):
        state = {**manifest_state(spec, old, device='meta'), **heads}
        report = load_model_weights(model, {'state_dict': state}, strict=True)
        assert not (report.missing_keys or report.unexpected_keys or report.shape_mismatches)
    model.backbone.load_state_dict({k[len('backbone.'):]: v for k, v in
                                    manifest_state(spec).items()}, strict=True, assign=True)
    assert not model.backbone.patch_embed[0].weight.is_meta


@pytest.mark.parametrize('name', sorted(RELEASES))
def test_the_manifest_names_its_config(name):
    spec = manifest(RELEASES[name][0])
    arch = architecture_of(manifest_shapes(spec), 'backbone.')
    found = matching_configs(arch, num_classes=RELEASES[name][2])
    assert osp.join('configs', 'vmamba', name) in found
    # every config named builds the same backbone
    assert {RELEASES[osp.relpath(f, 'configs/vmamba')][0] for f in found} == {RELEASES[name][0]}
    if 'old_names' in spec:
        old = architecture_of(manifest_shapes(spec, old_names=True), 'backbone.')
        assert old.old_names and old.same_model(arch)


def test_wrong_config_names_the_right_one(tmp_path, capsys):
    """tools/erf_seg.py's main with a new-generation config and a first-generation checkpoint in
    January 2024 names: exit status 2 and one sentence naming the config to use."""
    spec = manifest('v0/keys_v0_tiny.json')
    state = manifest_state(spec, old_names=True)
    state['decode_head.conv_seg.weight'] = torch.zeros(150, 512, 1, 1)
    path = tmp_path / 'vssmtiny_upernet.pth'
    torch.save({'state_dict': state, 'meta': {}}, path)
    images = tmp_path / 'images'
    images.mkdir()
    from PIL import Image
    Image.new('RGB', (32, 32), (120, 80, 40)).save(images / 'a.png')
    from mmseg_erf.cli import main
    status = main([config_path(f'vssm1/{P}-512x512_tiny.py'), str(path), '--img-dir',
                   str(images), '--input-size', '32', '--out-dir', str(tmp_path / 'out')])
    stderr = capsys.readouterr().err
    assert status == 2, stderr[-2000:]
    error = [line for line in stderr.splitlines() if 'does not fit' in line]
    assert len(error) == 1 and error[0].startswith('erf_seg.py: error: ')
    assert f'use configs/vmamba/vssm/{P}-512x512_tiny.py' in error[0]
    assert 'first-generation VMamba (v0)' in error[0] and 'depths [2, 2, 9, 2]' in error[0]
    assert 'missing keys' not in error[0]


def test_a_non_vmamba_mismatch_keeps_the_key_lists():
    model = torch.nn.Module()
    model.backbone = torch.nn.Linear(2, 2)
    with pytest.raises(CheckpointMismatchError, match='missing keys'):
        load_model_weights(model, {'state_dict': {'backbone.weight': torch.zeros(2, 2)}})
