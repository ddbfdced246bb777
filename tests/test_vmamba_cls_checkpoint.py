"""A VMamba ImageNet classification (or COCO detection) checkpoint given as the segmentor's
checkpoint: its backbone is loaded, one line says the heads are random, and a checkpoint
of another VMamba is refused in one sentence naming the config that builds it."""
import json
import logging
import os.path as osp

import pytest
import torch
from mmengine.logging import MMLogger

from mmseg_erf import validation
from mmseg_erf.checkpoint import CheckpointMismatchError, load_model_weights
from mmseg_erf.cli import main
from mmseg_erf.models.vmamba.pretrained import segmentor_weights
from mmseg_erf.segmentor import build_segmentor

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
FIXTURES = osp.join(REPO, 'tests', 'fixtures', 'vmamba')
P = 'upernet_vssm_4xb4-160k_ade20k-512x512_tiny.py'
CONFIG = osp.join(REPO, 'configs', 'vmamba', 'vssm1', P)


@pytest.fixture(scope='module')
def mini():
    """The reference's small new-generation VMamba (backbone-relative names) and the
    --cfg-options that shrink the released tiny config to it."""
    with open(osp.join(FIXTURES, 'vssm_mini_config.json')) as f:
        kwargs = json.load(f)['kwargs']
    state = torch.load(osp.join(FIXTURES, 'vssm_mini_state_dict.pt'), weights_only=True)
    state = {k[len('backbone.'):]: v for k, v in state.items()}
    dims = [kwargs['dims'] * 2**i for i in range(4)]
    options = {**{f'model.backbone.{k}': v for k, v in kwargs.items()},
               'model.backbone.drop_path_rate': 0.0, 'model.decode_head.in_channels': dims,
               'model.decode_head.channels': 16, 'model.auxiliary_head.in_channels': dims[2],
               'model.auxiliary_head.channels': 16}
    return state, options


def classification(state):
    """VMamba's ImageNet training output: no outnorm*, a classifier, model and model_ema."""
    body = {k: v.clone() for k, v in state.items() if not k.startswith('outnorm')}
    body.update({'classifier.norm.weight': torch.ones(256),
                 'classifier.head.weight': torch.zeros(10, 256)})
    return dict(model=body, model_ema={k: v + 1 for k, v in body.items()}, epoch=3)


def cli_options(options):
    return ['--cfg-options', *[f'{k}={json.dumps(v).replace(" ", "")}'
                               for k, v in options.items()]]


def images(tmp_path):
    from PIL import Image
    folder = tmp_path / 'images'
    folder.mkdir()
    Image.new('RGB', (64, 64), (120, 80, 40)).save(folder / 'a.png')
    return str(folder)


def assert_backbone_is(model, expected):
    loaded = model.backbone.state_dict()
    for key, value in expected.items():
        if not key.startswith(('outnorm', 'classifier')):
            assert torch.equal(loaded[key], value), key


def test_classification_checkpoint_through_the_command_line(mini, tmp_path, monkeypatch):
    state, options = mini
    path = str(tmp_path / 'vssm1_tiny_ckpt_epoch_3.pth')
    ckpt = classification(state)
    torch.save(ckpt, path)
    built, records = [], []
    handler = logging.Handler()
    handler.emit = records.append
    original = validation.build_model_checked

    def recording(*args, **kwargs):
        # the logger the load reports to: the CLI's, current while the model is built
        logger = MMLogger.get_current_instance()
        logger.addHandler(handler)
        try:
            built.append(original(*args, **kwargs))
        finally:
            logger.removeHandler(handler)
        return built[-1]

    monkeypatch.setattr(validation, 'build_model_checked', recording)
    status = main([CONFIG, path, '--img-dir', images(tmp_path), '--num-images', '1',
                   '--input-size', '64', '--num-workers', '0', '--targets', 'backbone.1',
                   '--out-dir', str(tmp_path / 'out'), *cli_options(options)])
    assert status == 0
    model, _, report = built[0]
    assert_backbone_is(model, ckpt['model'])
    random = [r.getMessage() for r in records if 'RANDOM' in r.getMessage()]
    assert len(random) == 1 and random[0] == report.note
    assert random[0].startswith(f'backbone loaded from checkpoint {path}, a VMamba ImageNet '
                                'classification checkpoint [model] (')
    assert random[0].endswith('decode_head and auxiliary_head are RANDOM (not in that '
                              'checkpoint)')
    assert 'left out: classifier.*' in random[0]
    assert not report.unexpected_keys and not report.shape_mismatches
    assert {k.split('.')[0] for k in report.missing_keys} == \
        {'backbone', 'decode_head', 'auxiliary_head'}
    assert all(k.startswith('backbone.outnorm') for k in report.missing_keys
               if k.startswith('backbone.'))


@pytest.mark.parametrize('allow_partial', (False, True))
def test_model_ema_and_allow_partial(mini, tmp_path, allow_partial):
    """pretrained_key picks the entry; --allow-partial loads the same backbone (it used to
    load nothing: the names carry no backbone. prefix)."""
    state, options = mini
    path = str(tmp_path / 'ckpt_epoch_3.pth')
    ckpt = classification(state)
    torch.save(ckpt, path)
    model, _, report = build_segmentor(
        CONFIG, path, allow_partial=allow_partial,
        cfg_options={**options, 'model.backbone.pretrained_key': 'model_ema'})
    assert_backbone_is(model, ckpt['model_ema'])
    assert 'classification checkpoint [model_ema]' in report.note


def test_detection_checkpoint_as_the_segmentor_checkpoint(mini, tmp_path):
    state, options = mini
    weights = {f'backbone.{k}': v for k, v in state.items()}
    weights.update({'neck.lateral_convs.0.conv.weight': torch.zeros(256, 32, 1, 1),
                    'rpn_head.rpn_conv.weight': torch.zeros(256, 256, 3, 3),
                    'roi_head.bbox_head.fc_cls.weight': torch.zeros(81, 1024)})
    path = str(tmp_path / 'mask_rcnn_vssm_fpn_coco_tiny_epoch_12.pth')
    torch.save(dict(state_dict=weights, meta=dict(mmdet_version='3.3.0')), path)
    model, _, report = build_segmentor(CONFIG, path, cfg_options=options)
    loaded = model.backbone.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())  # outnorm* too
    assert 'a VMamba COCO detection checkpoint of mmdet' in report.note
    assert 'left out: neck.*, roi_head.*, rpn_head.*' in report.note
    assert 'outnorm' not in report.note
    assert {k.split('.')[0] for k in report.missing_keys} == {'decode_head', 'auxiliary_head'}


def v0_tiny_classification():
    """A first-generation tiny ImageNet checkpoint at the released shapes (zeros), in
    VMamba's January 2024 names."""
    with open(osp.join(FIXTURES, 'v0', 'keys_v0_tiny.json')) as f:
        spec = json.load(f)
    shapes = dict(spec['params'])
    body = {old[len('backbone.'):]: torch.zeros(shapes[spec['old_to_new'][old]])
            for old in spec['old_names'] if '.outnorm' not in old}
    body.update({'norm.weight': torch.ones(768), 'head.weight': torch.zeros(1000, 768)})
    return dict(model=body, epoch=299)


@pytest.mark.parametrize('allow_partial', (False, True))
def test_another_vmamba_is_refused_naming_its_config(tmp_path, capsys, allow_partial):
    path = str(tmp_path / 'vssm_tiny_0230_ckpt_epoch_262.pth')
    torch.save(v0_tiny_classification(), path)
    status = main([CONFIG, path, '--img-dir', images(tmp_path), '--input-size', '32',
                   '--out-dir', str(tmp_path / 'out')] + ['--allow-partial'] * allow_partial)
    stderr = capsys.readouterr().err
    assert status == 2, stderr[-2000:]
    error = [line for line in stderr.splitlines() if line.startswith('erf_seg.py: error: ')]
    assert len(error) == 1
    assert error[0] == (
        f'erf_seg.py: error: checkpoint {path} (a VMamba ImageNet classification checkpoint '
        '[model]) does not fit the model: the config builds a new-generation VMamba (v2) '
        'backbone (dims [96, 192, 384, 768], depths [2, 2, 8, 2], d_state 1, ssm_ratio 1, '
        'with MLP), but it holds a first-generation VMamba (v0) backbone (dims [96, 192, '
        '384, 768], depths [2, 2, 9, 2], d_state 16, ssm_ratio 2, no MLP): use '
        f'configs/vmamba/vssm/{P}')


def test_segmentation_checkpoints_and_other_models_are_left_to_the_plain_load(mini):
    """The adapter answers only for classification/detection files and VMamba backbones."""
    state, _ = mini
    model = torch.nn.Module()
    model.backbone = torch.nn.Linear(2, 2)
    assert segmentor_weights(model, classification(state), 'cls') is None
    with pytest.raises(CheckpointMismatchError, match='missing keys'):
        load_model_weights(model, classification(state))
