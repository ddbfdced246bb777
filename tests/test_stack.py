"""The stack works: mmcv ops, mmseg models built from shipped configs, input gradients."""
import os

import torch


def test_mmcv_has_compiled_ops():
    import mmcv
    from mmcv.ops import nms
    assert mmcv.__version__ == '2.1.0'
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30.]])
    _, keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5)
    assert keep.tolist() == [0, 2]


def test_import_registers_every_type():
    import mmseg_erf  # noqa: F401
    from mmseg.registry import DATASETS, HOOKS, MODELS, TRANSFORMS
    assert HOOKS.get('ERFHook') is not None
    assert DATASETS.get('ImageFolderDataset') is not None
    assert TRANSFORMS.get('ERFResizeCrop') is not None
    assert MODELS.get('MM_VSSM') is not None


def test_shipped_config_forward_and_input_gradient():
    import mmseg
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    from mmseg_erf.segmentor import disable_pretrained
    path = os.path.join(os.path.dirname(mmseg.__file__), '.mim', 'configs', 'swin',
                        'swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py')
    cfg = Config.fromfile(path)
    init_default_scope('mmseg')
    disable_pretrained(cfg.model)
    assert cfg.model.backbone.init_cfg is None
    model = MODELS.build(cfg.model).eval()
    x = torch.randn(1, 3, 64, 64, requires_grad=True)
    logits = model(x, mode='tensor')
    assert logits.shape == (1, 150, 16, 16)
    logits[:, :, 8, 8].relu().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_disable_pretrained_keeps_and_reports_local_files(tmp_path):
    from mmseg_erf.segmentor import disable_pretrained
    local, neck_local = tmp_path / 'backbone.pth', tmp_path / 'neck.pth'
    local.write_bytes(b'')
    neck_local.write_bytes(b'')
    model = dict(
        pretrained='https://example.org/r50.pth',
        backbone=dict(pretrained=str(local),
                      init_cfg=dict(type='Pretrained', checkpoint='open-mmlab://resnet50')),
        neck=dict(init_cfg=[dict(type='Pretrained', checkpoint=str(neck_local)),
                            dict(type='Pretrained', checkpoint='torchvision://resnet50'),
                            dict(type='Kaiming', layer='Conv2d')]),
        decode_head=dict(init_cfg=dict(type='Normal', std=0.01)))
    assert disable_pretrained(model) == sorted([str(local), str(neck_local)])
    assert model['pretrained'] is None and model['backbone']['pretrained'] == str(local)
    assert model['backbone']['init_cfg'] is None
    assert model['neck']['init_cfg'] == [dict(type='Pretrained', checkpoint=str(neck_local)),
                                         dict(type='Kaiming', layer='Conv2d')]
    assert model['decode_head']['init_cfg'] == dict(type='Normal', std=0.01)
