"""Zoo configs by name, the entry points, the input-size refusal and the memory estimate."""
import os
import subprocess
import sys

import pytest
import torch

import mmseg_erf.input_size
import mmseg_erf.segmentor
from mmseg_erf import compute_erf
from mmseg_erf.cli import main
from mmseg_erf.errors import ERFUsageError
from mmseg_erf.segmentor import resolve_config

from conftest import TINY_CONFIG

FCN = 'mmseg::fcn/fcn_r18-d8_4xb2-80k_cityscapes-512x1024.py'


def test_zoo_config_names_resolve_to_the_shipped_files():
    import mmseg
    path = resolve_config(FCN)
    assert path == os.path.join(os.path.dirname(mmseg.__file__), '.mim', 'configs', 'fcn',
                                'fcn_r18-d8_4xb2-80k_cityscapes-512x1024.py')
    assert resolve_config(TINY_CONFIG) == TINY_CONFIG
    with pytest.raises(FileNotFoundError, match=r"the configs of mmseg::fcn/ are in .*fcn"):
        resolve_config('mmseg::fcn/no_such.py')
    with pytest.raises(FileNotFoundError, match="no installed package 'nopkg'"):
        resolve_config('nopkg::fcn/x.py')


def test_entry_points_take_the_same_arguments():
    scripts = os.path.dirname(sys.executable)
    for command in ([sys.executable, '-m', 'mmseg_erf'], [os.path.join(scripts, 'mmseg-erf')]):
        out = subprocess.run(command + ['--help'], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert 'mmseg::<family>/<config>.py' in out.stdout and '--input-size' in out.stdout


def test_missing_optional_package_is_named(monkeypatch):
    """Mutation: without check_packages, the build fails deep in the registry."""
    real_import = __import__

    def no_mmdet(name, *args, **kwargs):
        if name.startswith('mmdet'):
            raise ModuleNotFoundError("No module named 'mmdet'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr('builtins.__import__', no_mmdet)
    with pytest.raises(ERFUsageError, match=r"builds from mmdet, which does not import here "
                                            r"\(No module named 'mmdet'\); install it: pip"):
        mmseg_erf.segmentor.load_config('mmseg::maskformer/'
                                        'maskformer_r50-d32_8xb2-160k_ade20k-512x512.py')


def test_fixed_size_model_names_the_size_that_works():
    """BEiT built for 96 x 96 (relative position tables): 64 is refused with 96 named."""
    model = mmseg_erf.segmentor.build_segmentor(
        'mmseg::beit/beit-base_upernet_8xb2-160k_ade20k-640x640.py',
        cfg_options={'model.backbone.img_size': (96, 96), 'model.backbone.num_layers': 2,
                     'model.backbone.out_indices': (0, 1, 1, 1)})[0]
    image = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)
    with pytest.raises(ERFUsageError, match=r'the model cannot take a 64x64 input '
                                            r'\(RuntimeError: The size of tensor a .*\); '
                                            r'use --input-size 96 \(the config'):
        compute_erf(model, iter([dict(inputs=[image])]), targets=['backbone.0'],
                    num_images=1, input_size=64)


def test_memory_estimate_refuses_a_size_that_does_not_fit(monkeypatch):
    """Mutation: without check_memory the run would start (and, for real, be killed)."""
    from mmseg_erf.engine import ERFSession
    model = mmseg_erf.segmentor.build_segmentor(TINY_CONFIG)[0]
    session = ERFSession(model, ['decode_head'], 1)
    assert mmseg_erf.input_size.check_memory(session, 1024, 2) > 0  # measured for real
    monkeypatch.setattr(mmseg_erf.input_size, 'peak_growth', lambda run, device: 2 ** 20)
    estimate = mmseg_erf.input_size.check_memory(session, 1024, 2)
    assert estimate == 2 ** 20 * 16 * 2  # area ratio 16, batch 2
    monkeypatch.setattr(mmseg_erf.input_size, 'available_bytes', lambda device: estimate // 2)
    with pytest.raises(ERFUsageError, match=r'the run needs about .* GiB at 1024x1024, batch 2 '
                                            r'\(measured at 256, scaled by area\), more than '
                                            r'the .* GiB of memory available; use a smaller '
                                            r'--input-size \(about \d+ fits\)'):
        mmseg_erf.input_size.check_memory(session, 1024, 2)
    warnings = []
    monkeypatch.setattr(mmseg_erf.input_size, 'available_bytes',
                        lambda device: int(estimate / 0.9))
    mmseg_erf.input_size.check_memory(session, 1024, 2, warn=warnings.append)
    assert len(warnings) == 1 and 'close to the' in warnings[0]
