"""ERFHook's heatmaps and scalars reach WandbVisBackend (an offline run, read back)."""
import json
import time

import numpy as np
import pytest
from mmengine.runner import Runner

from test_hook import hook_cfg


BLOCK = 32768  # wandb's run files are LevelDB-style logs: 32 KiB blocks of chunks
HEADER = 7  # ':W&B', a 2-byte magic and a version byte


def _records(run_file):
    """Every record of an offline run file: chunks of 4-byte checksum, 2-byte length,
    1-byte kind (1 whole, 2 first, 3 middle, 4 last), data; never across a block end."""
    from wandb.proto import wandb_internal_pb2
    data = run_file.read_bytes()
    assert data[:4] == b':W&B', 'not a wandb run file'
    offset, pending = HEADER, b''
    while offset + 7 <= len(data):
        left = BLOCK - offset % BLOCK
        if left < 7:  # the block's tail is padding
            offset += left
            continue
        length = int.from_bytes(data[offset + 4:offset + 6], 'little')
        kind = data[offset + 6]
        chunk = data[offset + 7:offset + 7 + length]
        offset += 7 + length
        if kind == 0 and length == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def _history(run_file) -> dict:
    history = {}
    for record in _records(run_file):
        if record.WhichOneof('record_type') == 'history':
            for item in record.history.item:
                history[item.key or '/'.join(item.nested_key)] = json.loads(item.value_json)
    return history


def test_wandb_offline_receives_heatmaps_and_scalars(tmp_path, voc_tree, monkeypatch):
    pytest.importorskip('wandb', reason='wandb is not installed (pip install -e ".[wandb]")')
    from PIL import Image
    monkeypatch.setenv('WANDB_MODE', 'offline')
    monkeypatch.setenv('WANDB_SILENT', 'true')
    monkeypatch.setenv('WANDB_DIR', str(tmp_path))
    cfg = hook_cfg(tmp_path, voc_tree)
    # a fresh name: visualizers are process-wide instances, one per name
    cfg.visualizer = dict(type='SegLocalVisualizer', name='erf_wandb_test',
                          vis_backends=[dict(type='WandbVisBackend', save_dir=str(tmp_path),
                                             init_kwargs=dict(mode='offline',
                                                              dir=str(tmp_path)))])
    runner = Runner.from_cfg(cfg)
    runner.val()
    runner.visualizer.close()

    runs = sorted(tmp_path.rglob('offline-run-*'))
    assert runs, 'WandbVisBackend wrote no offline run'
    run_files = sorted(runs[0].glob('run-*.wandb'))
    assert run_files, f'no run file in {runs[0]}'
    # wandb's service process writes the run file; under load its last records can
    # land after finish() has returned, so read until the scalars are there (or 60 s)
    deadline = time.monotonic() + 60
    while True:
        history = _history(run_files[0])
        if any('area_0.5_pct' in key for key in history) or time.monotonic() > deadline:
            break
        time.sleep(1)
    written = tmp_path / 'work' / 'erf' / 'iter_0'
    metrics = json.loads((written / 'metrics.json').read_text())
    for target in ('backbone.1', 'decode_head'):
        assert history[f'erf_{target}/_type'] == 'image-file'
        media = runs[0] / 'files' / history[f'erf_{target}/path']
        png = np.asarray(Image.open(written / f'erf_{target}.png').convert('RGB'))
        assert np.asarray(Image.open(media).convert('RGB')).shape == png.shape
        scalar = [k for k in history if k.endswith(f'erf/{target}/area_0.5_pct')]
        assert scalar, f'no area scalar of {target} among {sorted(history)}'
        assert history[scalar[0]] == pytest.approx(
            100 * metrics['targets'][target]['area_ratio']['0.5'])
