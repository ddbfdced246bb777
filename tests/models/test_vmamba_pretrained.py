"""VMamba classification and detection checkpoints into MM_VSSM through ``pretrained``,
and tools/vmamba_ckpt.py on the three kinds of checkpoint."""
import json
import logging
import os.path as osp

import pytest
import torch
from mmengine.logging import MMLogger

from mmseg_erf.models import MM_VSSM

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
V0 = osp.join(REPO, 'tests', 'fixtures', 'vmamba', 'v0')


@pytest.fixture(scope='module')
def mini():
    with open(osp.join(V0, 'vssm0_mini_config.json')) as f:
        kwargs = json.load(f)['kwargs']
    load = lambda name: torch.load(osp.join(V0, name), weights_only=True)  # noqa: E731
    return kwargs, load('vssm0_mini_state_dict.pt'), load('vssm0_mini_state_dict_oldnames.pt')


class LogRecords:
    """The messages logged to mmengine's current logger inside the block."""

    def __enter__(self):
        self.records, self.handler = [], logging.Handler()
        self.handler.emit = self.records.append
        MMLogger.get_current_instance().addHandler(self.handler)
        return self

    def __exit__(self, *exc):
        MMLogger.get_current_instance().removeHandler(self.handler)

    @property
    def text(self):
        return '\n'.join(r.getMessage() for r in self.records)


def classification(state, old_names):
    """VMamba's ImageNet training output: no outnorm, a classifier (old: norm/head)."""
    body = {k[len('backbone.'):]: v.clone() for k, v in state.items()
            if '.outnorm' not in k}
    head = ('norm', 'head') if old_names else ('classifier.norm', 'classifier.head')
    body.update({f'{head[0]}.weight': torch.ones(256), f'{head[1]}.weight': torch.zeros(10, 256)})
    ema = {k: v + 1 for k, v in body.items()}
    return dict(model=body, model_ema=ema, epoch=3, config={'MODEL': {'TYPE': 'vssm'}})


def detection(state):
    """An mmdet Mask R-CNN checkpoint: backbone.* beside neck, rpn_head and roi_head."""
    weights = dict(state)
    weights.update({'neck.lateral_convs.0.conv.weight': torch.zeros(256, 32, 1, 1),
                    'rpn_head.rpn_conv.weight': torch.zeros(256, 256, 3, 3),
                    'roi_head.bbox_head.fc_cls.weight': torch.zeros(81, 1024)})
    return dict(state_dict=weights, meta=dict(mmdet_version='3.3.0'))


@pytest.mark.parametrize('old_names', (False, True))
@pytest.mark.parametrize('key', ('model', 'model_ema'))
def test_classification_checkpoint_of_the_first_generation(mini, tmp_path, key, old_names):
    kwargs, state, old = mini
    ckpt = classification(old if old_names else state, old_names)
    path = str(tmp_path / 'vssmtiny_ckpt_epoch_292.pth')
    torch.save(ckpt, path)
    model = MM_VSSM(**kwargs, pretrained=path, pretrained_key=key)
    outnorm = model.outnorm2.weight.clone()
    with LogRecords() as log:
        model.init_weights()
    expected = {k[len('backbone.'):]: v for k, v in state.items()}
    offset = 1 if key == 'model_ema' else 0
    for name, value in model.state_dict().items():
        if name.startswith('outnorm'):
            continue
        assert torch.equal(value, expected[name] + offset), name
    assert torch.equal(model.outnorm2.weight, outnorm)  # not in the file: initial values
    assert f'a VMamba classification checkpoint [{key}]' in log.text
    assert 'left out: classifier.*' in log.text
    assert ('renamed from VMamba\'s January 2024 names' in log.text) == old_names


def test_detection_checkpoint_uses_the_backbone_only(mini, tmp_path):
    kwargs, state, old = mini
    path = str(tmp_path / 'mask_rcnn_vssm_fpn_coco_tiny_epoch_12.pth')
    torch.save(detection(old), path)
    model = MM_VSSM(**kwargs, pretrained=path)
    with LogRecords() as log:
        model.init_weights()
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[f'backbone.{name}']), name
    assert 'a detection checkpoint (mmdet): only backbone.* is used' in log.text
    assert 'left out: neck.*, roi_head.*, rpn_head.*' in log.text


def test_a_checkpoint_of_another_variant_is_refused_with_what_it_is(mini):
    kwargs, state, _ = mini
    other = {**kwargs, 'depths': (1, 1, 1, 1)}
    with pytest.raises(ValueError, match=r'it holds a first-generation VMamba \(v0\) backbone '
                       r'\(dims \[32, 64, 128, 256\], depths \[1, 1, 2, 1\]'):
        MM_VSSM(**other).load_pretrained(detection(state))


def test_vmamba_ckpt_tool(mini, tmp_path, capsys):
    """tools/vmamba_ckpt.py names the config for the manifest-sized first-generation tiny
    in all three kinds, and exits with status 2 on a file that is no VMamba."""
    import importlib.util
    spec = importlib.util.spec_from_file_location('vmamba_ckpt',
                                                  osp.join(REPO, 'tools', 'vmamba_ckpt.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    with open(osp.join(V0, 'keys_v0_tiny.json')) as f:
        manifest = json.load(f)
    shapes = dict(manifest['params'])
    old = {o: torch.zeros(shapes[manifest['old_to_new'][o]]) for o in manifest['old_names']}
    seg = dict(old, **{'decode_head.conv_seg.weight': torch.zeros(150, 512, 1, 1)})
    files = {'seg.pth': dict(state_dict=seg), 'det.pth': detection(old),
             'cls.pth': classification(old, old_names=True)}
    for name, content in files.items():
        torch.save(content, tmp_path / name)
    assert tool.main([str(tmp_path / n) for n in files]) == 0
    out = capsys.readouterr().out
    config = 'configs/vmamba/vssm/upernet_vssm_4xb4-160k_ade20k-512x512_tiny.py'
    assert out.count(f'config: {config}') == 4  # seg, det, cls [model] and [model_ema]
    assert 'depths [2, 2, 9, 2], d_state 16, ssm_ratio 2, no MLP, January 2024 names' in out
    assert f'run: python tools/erf_seg.py {config} {tmp_path / "seg.pth"}' in out
    assert f'model.backbone.pretrained={tmp_path / "cls.pth"} ' \
        'model.backbone.pretrained_key=model_ema' in out
    torch.save({'state_dict': {'conv.weight': torch.zeros(1)}}, tmp_path / 'other.pth')
    assert tool.main([str(tmp_path / 'other.pth')]) == 2
    assert 'holds no VMamba backbone' in capsys.readouterr().err
