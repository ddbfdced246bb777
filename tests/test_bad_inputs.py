"""Real folders: broken files are skipped and counted, odd formats are converted."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mmseg_erf import compute_erf

from conftest import REPO, TINY_CONFIG


@pytest.fixture
def messy_folder(tmp_path):
    folder = tmp_path / 'messy'
    folder.mkdir()
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(folder / 'a_rgb.jpg')
    Image.fromarray(rgb[..., 0]).save(folder / 'b_grey.png')
    Image.fromarray(np.dstack([rgb, np.full((40, 50), 128, np.uint8)])).save(
        folder / 'c_rgba.png')
    Image.fromarray((rng.integers(0, 65535, (40, 50))).astype(np.uint16)).save(
        folder / 'd_16bit.png')
    (folder / 'e_empty.png').write_bytes(b'')
    (folder / 'f_text.jpg').write_text('not an image')
    data = (folder / 'a_rgb.jpg').read_bytes()
    (folder / 'g_truncated.jpg').write_bytes(data[:len(data) // 3])
    return str(folder)


def test_broken_files_skipped_odd_formats_used(messy_folder):
    result = compute_erf(TINY_CONFIG, messy_folder, ['backbone.1'], num_images=10,
                         input_size=32)
    # used: rgb, grey, rgba, 16-bit; skipped: empty, text, truncated
    assert (result.num_images, result.skipped) == (4, 3)
    assert np.isfinite(result.maps['backbone.1']).all()
    paths = sorted(os.path.join(messy_folder, f) for f in os.listdir(messy_folder))
    as_list = compute_erf(TINY_CONFIG, paths, ['backbone.1'], num_images=10, input_size=32)
    assert (as_list.num_images, as_list.skipped) == (4, 3)
    np.testing.assert_allclose(as_list.maps['backbone.1'], result.maps['backbone.1'])


def run_cli(*args):
    return subprocess.run([sys.executable, os.path.join(REPO, 'tools', 'erf_seg.py'),
                           TINY_CONFIG, '--num-workers', '0', '--input-size', '32', *args],
                          capture_output=True, text=True, timeout=600, cwd=REPO)


def test_cli_counts_skipped_and_warns_once_each(messy_folder, tmp_path):
    proc = run_cli('--img-dir', messy_folder, '--out-dir', str(tmp_path / 'out'))
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = json.loads((tmp_path / 'out' / 'metrics.json').read_text())
    assert (info['num_images'], info['skipped']) == (4, 3)
    log = proc.stdout + proc.stderr
    assert log.count('skipping') == 3
    assert all(name in log for name in ('e_empty.png', 'f_text.jpg', 'g_truncated.jpg'))


def test_cli_folder_without_usable_image(tmp_path):
    folder = tmp_path / 'junk'
    folder.mkdir()
    (folder / 'x.jpg').write_text('nope')
    proc = run_cli('--img-dir', str(folder))
    assert proc.returncode == 2 and 'no usable image' in proc.stderr
    assert 'Traceback' not in proc.stderr
    (folder / 'x.jpg').unlink()
    proc = run_cli('--img-dir', str(folder))
    assert proc.returncode == 2 and 'no image with suffix' in proc.stderr
