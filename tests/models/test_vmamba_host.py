"""This package inside VMamba's own segmentation/ folder: VMamba's ``model.py`` registers
its own ``MM_VSSM`` into mmseg's MODELS (``import model`` in its tools/test.py). A stand-in
module doing the same is imported before and after ``mmseg_erf``; in both orders the
Runner's test run with ERFHook works on the host's model (with only the test data on
disk, as when evaluating a released checkpoint), and this package's configs still build
this package's MM_VSSM."""
import json
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO, TINY_CONFIG, make_voc_tree

# what VMamba's segmentation/model.py does, on a tiny stand-in backbone
STANDIN = '''
import torch.nn as nn
from mmengine.model import BaseModule
from mmseg.registry import MODELS as MODELS_MMSEG


@MODELS_MMSEG.register_module()
class MM_VSSM(BaseModule):
    """Stand-in for VMamba's MM_VSSM(BaseModule, Backbone_VSSM): a list of 4 stages."""

    def __init__(self, dims=8, depths=(1, 1, 1, 1), out_indices=(0, 1, 2, 3), **kwargs):
        super().__init__()
        self.out_indices = out_indices
        chans = [3] + [dims * 2**i for i in range(4)]
        self.stages = nn.ModuleList(
            nn.Conv2d(chans[i], chans[i + 1], 4 if i == 0 else 2, stride=4 if i == 0 else 2)
            for i in range(4))

    def forward(self, x):
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs
'''

SCRIPT = '''
import json, os, sys
sys.path.insert(0, {standin!r})
if sys.argv[1] == 'vmamba-first':
    import model  # noqa: F401  (VMamba's tools/test.py does this)
    import mmseg_erf  # noqa: F401
else:
    import mmseg_erf  # noqa: F401
    import model  # noqa: F401
import torch
from mmengine.config import Config
from mmengine.runner import Runner
from mmseg.registry import MODELS

cfg = Config.fromfile({tiny!r})
cfg.custom_imports = dict(imports=['mmseg_erf'], allow_failed_imports=False)
cfg.model.backbone = dict(type='MM_VSSM', dims=8)
cfg.model.decode_head.in_channels = [8, 16, 32, 64]
cfg.model.auxiliary_head.in_channels = 32
for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
    cfg[loader]['dataset']['data_root'] = {data!r}
cfg.work_dir = {work!r}
cfg.launcher = 'none'
cfg.custom_hooks = [dict(type='ERFHook', targets=['backbone.3', 'decode_head'], num_images=2,
                         input_size=64)]
runner = Runner.from_cfg(cfg)
runner.test()
ours = Config.fromfile(os.path.join({repo!r}, 'configs', 'vmamba', 'vssm1',
                                    'upernet_vssm_4xb4-160k_ade20k-512x512_tiny.py'))
with torch.device('meta'):
    built = MODELS.build(ours.model)
print(json.dumps(dict(hooked=type(runner.model.backbone).__module__,
                      plain=MODELS.get('MM_VSSM').__module__,
                      scoped=MODELS.get('mmseg_erf.MM_VSSM').__module__,
                      config=type(built.backbone).__module__)))
'''


@pytest.mark.parametrize('order', ('vmamba-first', 'mmseg_erf-first'))
def test_vmamba_repository_as_host(tmp_path, order):
    """Without the scoped registry (ours registered as plain MM_VSSM in mmseg's MODELS)
    both orders end in ``KeyError: 'MM_VSSM is already registered'``."""
    voc_tree = make_voc_tree(tmp_path / 'data', splits=(('val', 3), ))  # no images/train
    standin = tmp_path / 'segmentation'
    standin.mkdir()
    (standin / 'model.py').write_text(STANDIN)
    script = tmp_path / 'host.py'
    script.write_text(textwrap.dedent(SCRIPT.format(
        standin=str(standin), tiny=TINY_CONFIG, data=voc_tree, work=str(tmp_path / 'work'),
        repo=REPO)))
    run = subprocess.run([sys.executable, str(script), order], capture_output=True, text=True,
                         timeout=600, cwd=str(standin))
    assert run.returncode == 0, run.stderr[-3000:]
    found = json.loads(run.stdout.strip().splitlines()[-1])
    assert found == dict(hooked='model', plain='model',
                         scoped='mmseg_erf.models.vmamba.backbone',
                         config='mmseg_erf.models.vmamba.backbone')
    metrics = json.loads((tmp_path / 'work' / 'erf' / 'test' / 'metrics.json').read_text())
    assert metrics['num_images'] == 2 and set(metrics['targets']) == {'backbone.3', 'decode_head'}
