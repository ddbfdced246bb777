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
    assert np.isfinite(result.map('backbone.1')).all()
    paths = sorted(os.path.join(messy_folder, f) for f in os.listdir(messy_folder))
    as_list = compute_erf(TINY_CONFIG, paths, ['backbone.1'], num_images=10, input_size=32)
    assert (as_list.num_images, as_list.skipped) == (4, 3)
    np.testing.assert_allclose(as_list.map('backbone.1'), result.map('backbone.1'))


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


# ---- one table of bad inputs for tools/erf_seg.py -----------------------------------
# Each row: (id, positional arguments, options, a word the one-sentence error must
# contain, out dir state). 'prior': --out-dir holds a finished run of the base options
# and must come out byte for byte the same; 'fresh': --out-dir does not exist and must
# not be created; a named setup ('hookrun', 'interrupted', 'damaged'): that folder,
# unchanged afterwards. {name} in an argument is a path of the `bad` fixture.
BASE = ['--img-dir', '{images}', '--input-size', '32', '--num-workers', '0', '--targets',
        'backbone.1', '--num-images', '2']
CFG = TINY_CONFIG
CLI_ROWS = [
    # paths and files, before anything is built
    ('config missing', ['{root}/missing.py'], [], 'does not exist', 'prior'),
    ('config is a folder', ['{root}'], [], 'is a folder', 'prior'),
    ('config syntax error', ['{syntax_config}'], [], 'syntax error', 'prior'),
    ('config unknown base', ['{unknown_base_config}'], [], 'cannot be read', 'prior'),
    ('checkpoint missing', [CFG, '{root}/nowhere.pth'], [], 'does not exist', 'prior'),
    ('checkpoint is text', [CFG, '{text_file}'], [], 'is not a checkpoint', 'prior'),
    ('checkpoint is empty', [CFG, '{empty_file}'], [], 'is not a checkpoint', 'prior'),
    ('checkpoint truncated', [CFG, '{truncated_ckpt}'], [], 'is not a checkpoint', 'fresh'),
    ('checkpoint is a folder', [CFG, '{root}'], [], 'is a folder', 'prior'),
    ('img-dir missing', [CFG], ['--img-dir', '/no/such/dir'], 'does not exist', 'prior'),
    ('img-dir is a file', [CFG], ['--img-dir', '{text_file}'], 'not a folder', 'prior'),
    ('out-dir is a file', [CFG], ['--out-dir', '{text_file}'], 'is a file', 'text_file'),
    ('out-dir under a file', [CFG], ['--out-dir', '{text_file}/sub'], 'cannot be created',
     'text_file'),
    # values and ranges
    ('num-images 0', [CFG], ['--num-images', '0'], '--num-images', 'prior'),
    ('batch-size 0', [CFG], ['--batch-size', '0'], '--batch-size', 'prior'),
    ('input-size 0', [CFG], ['--input-size', '0'], '--input-size', 'prior'),
    ('num-workers -1', [CFG], ['--num-workers', '-1'], '--num-workers', 'prior'),
    ('save-every -1', [CFG], ['--save-every', '-1'], '--save-every', 'prior'),
    ('point 1.5', [CFG], ['--point', '1.5', '0.5'], '--point', 'prior'),
    ('point negative', [CFG], ['--point', '0.5', '-0.1'], '--point', 'prior'),
    ('class-index negative', [CFG], ['--class-index', '-1'], '--class-index', 'prior'),
    ('class-index without logit target', [CFG], ['--class-index', '2'], 'logit', 'prior'),
    ('device cuda on CPU torch', [CFG], ['--device', 'cuda'], 'CUDA', 'prior'),
    ('device not a device', [CFG], ['--device', 'gpu0'], 'not a device', 'prior'),
    ('launcher without torchrun', [CFG], ['--launcher', 'pytorch'], 'torchrun', 'prior'),
    ('launcher slurm on CPU', [CFG], ['--launcher', 'slurm', '--device', 'cpu'], 'CUDA',
     'prior'),
    ('resume and overwrite', [CFG], ['--resume', '--overwrite'], 'one of them', 'prior'),
    ('cfg-options not mergeable', [CFG], ['--cfg-options', 'model.backbone.depth.x=1'],
     'model.backbone.depth.x=1', 'prior'),
    # another run's results are never replaced silently
    ('out-dir holds other targets', [CFG], ['--targets', 'backbone.2'], '--overwrite',
     'prior'),
    ('out-dir holds fewer images', [CFG], ['--num-images', '3'], 'num_images', 'prior'),
    ('out-dir holds another size', [CFG], ['--input-size', '64'], 'input_size', 'prior'),
    ('out-dir holds hook results', [CFG], ['--out-dir', '{hookrun}'], 'not recorded',
     'hookrun'),
    ('out-dir holds an interrupted run', [CFG], ['--out-dir', '{interrupted}'],
     '--resume', 'interrupted'),
    ('resume over a damaged state', [CFG], ['--out-dir', '{damaged}', '--resume'], 'damaged',
     'damaged'),
    ('resume with other options', [CFG], ['--out-dir', '{interrupted}', '--resume',
                                          '--num-images', '3'], 'differs', 'interrupted'),
    # what needs the model: after the build, before the first image
    ('class-index beyond the classes', [CFG], ['--class-index', '999', '--targets',
                                               'decode_head'], '4 classes', 'fresh'),
    ('target neck without a neck', [CFG], ['--targets', 'neck.0'], 'no neck', 'fresh'),
    ('target index out of range', [CFG], ['--targets', 'backbone.9'], 'out of range',
     'fresh'),
    ('target unknown', [CFG], ['--targets', 'nothing.here'], 'unknown target', 'fresh'),
    ('cfg-options breaking the build', [CFG], ['--cfg-options', 'model.backbone.depth=7'],
     'model.backbone.depth=7', 'fresh'),
    ('cfg-options unknown type', [CFG], ['--cfg-options', 'model.decode_head.type=NoHead',
                                         'model.backbone.depth=18'],
     'model.decode_head.type=NoHead breaks', 'fresh'),
    ('input size the model cannot take', ['{window_config}'], ['--input-size', '96'],
     '--input-size 64 or 128', 'fresh'),
    ('checkpoint of another model', [CFG, '{other_ckpt}'], [], 'does not fit', 'fresh'),
    ('checkpoint outside the allow-list', [CFG, '{untrusted_ckpt}'], [], 'allow-list',
     'fresh'),
    # the images
    ('no test dataset and no img-dir', ['{no_test_config}'], ['--img-dir', None],
     '--img-dir', 'fresh'),
    ('test dataset not on disk', [CFG], ['--img-dir', None, '--cfg-options',
                                         'test_dataloader.dataset.data_root=/no/data'],
     'not on disk', 'fresh'),
    ('folder without a usable image', [CFG], ['--img-dir', '{junk_images}'],
     'no usable image', 'fresh'),
    ('folder without images', [CFG], ['--img-dir', '{root}/empty_dir'],
     'no image with suffix', 'fresh'),
]


WINDOW_MODULE = '''
from mmseg.models.backbones import ResNetV1c
from mmseg.registry import MODELS


@MODELS.register_module(force=True)
class ERFTestWindowBackbone(ResNetV1c):
    """Takes only sides that are multiples of 64, like a fixed window grid."""

    def forward(self, x):
        if x.shape[-1] % 64:
            raise RuntimeError(f'side {x.shape[-1]} is not a multiple of 64')
        return super().forward(x)
'''


@pytest.fixture(scope='module')
def bad(tmp_path_factory):
    """Bad files and folders, and a finished run of the BASE options (``prior``)."""
    import datetime
    import shutil

    import torch

    from conftest import make_voc_tree
    from mmseg_erf.cli import main
    from mmseg_erf.engine import ERFAccumulator
    root = tmp_path_factory.mktemp('bad')
    paths = dict(root=str(root))
    paths['images'] = os.path.join(make_voc_tree(root / 'voc', splits=(('val', 3), ),
                                                 labels=False), 'images', 'val')
    write = {'syntax_config': 'x = dict(a=1,\n', 'text_file': 'not a checkpoint\n',
             'empty_file': '',
             'unknown_base_config': "_base_ = ['mmseg::no_such/base.py']\n",
             'no_test_config': f'_base_ = [{TINY_CONFIG!r}]\ntest_dataloader = None\n'
                               'val_dataloader = None\n',
             'window_config': f'_base_ = [{TINY_CONFIG!r}]\ncustom_imports = dict(imports='
                              "['mmseg_erf', 'erf_test_window_backbone'])\n"
                              "model = dict(backbone=dict(type='ERFTestWindowBackbone'))\n"}
    for name, text in write.items():
        path = root / (name + ('.py' if name.endswith('config') else '.txt'))
        path.write_text(text)
        paths[name] = str(path)
    (root / 'modules').mkdir()
    (root / 'modules' / 'erf_test_window_backbone.py').write_text(WINDOW_MODULE)
    sys.path.insert(0, str(root / 'modules'))
    (root / 'empty_dir').mkdir()
    (root / 'junk').mkdir()
    (root / 'junk' / 'x.jpg').write_text('nope')
    paths['junk_images'] = str(root / 'junk')
    torch.save({'state_dict': {'other.weight': torch.zeros(3)}}, root / 'other.pth')
    paths['other_ckpt'] = str(root / 'other.pth')
    data = (root / 'other.pth').read_bytes()
    (root / 'truncated.pth').write_bytes(data[:len(data) // 2])
    paths['truncated_ckpt'] = str(root / 'truncated.pth')
    torch.save({'state_dict': {}, 'when': datetime.timedelta(1)}, root / 'untrusted.pth')
    paths['untrusted_ckpt'] = str(root / 'untrusted.pth')
    prior = root / 'prior'
    assert main([TINY_CONFIG] + [a.format(**paths) for a in BASE] + ['--out-dir',
                                                                      str(prior)]) == 0
    paths['prior'] = str(prior)
    # results whose options are not recorded (as ERFHook or compute_erf write them)
    shutil.copytree(prior, root / 'hookrun')
    info = json.loads((root / 'hookrun' / 'metrics.json').read_text())
    info['meta'].pop('options')
    (root / 'hookrun' / 'metrics.json').write_text(json.dumps(info))
    paths['hookrun'] = str(root / 'hookrun')
    # an interrupted run of the BASE options (its saved sums), and a damaged copy
    from mmseg_erf.cli import _fingerprint, build_parser
    args = build_parser().parse_args([TINY_CONFIG] + [a.format(**paths) for a in BASE])
    fingerprint = json.dumps(_fingerprint(args, 1), sort_keys=True, default=str)
    acc = ERFAccumulator(['backbone.1'], (32, 32), anchor=(16, 16))
    acc.add({'backbone.1': np.ones((1, 32, 32))}, [(16, 16)], [('centre', )])
    for name in ('interrupted', 'damaged'):
        acc.save(str(root / name / '.erf_state' / 'rank0.npz'),
                 extra=dict(seen=1, fingerprint=fingerprint))
        paths[name] = str(root / name)
    state = root / 'damaged' / '.erf_state' / 'rank0.npz'
    state.write_bytes(state.read_bytes()[:200])
    return paths


def snapshot(path):
    """Every file under ``path`` with its bytes, every folder as None (None when
    ``path`` does not exist)."""
    if not os.path.exists(path):
        return None
    if os.path.isfile(path):
        return open(path, 'rb').read()
    found = {}
    for folder, dirs, files in os.walk(path):
        found.update({os.path.relpath(os.path.join(folder, d), path): None for d in dirs})
        found.update({os.path.relpath(os.path.join(folder, f), path):
                      open(os.path.join(folder, f), 'rb').read() for f in files})
    return found


def cli_argv(bad, row, out_dir):
    _, positional, options, _, _ = row
    options = list(options)
    base = list(BASE)
    if '--img-dir' in options and options[options.index('--img-dir') + 1] is None:
        i = options.index('--img-dir')
        del options[i:i + 2], base[0:2]
    argv = positional + base + options
    if '--out-dir' not in options:
        argv += ['--out-dir', out_dir]
    return [a.format(**bad) for a in argv]


def row_out_dir(bad, row, tmp_path):
    """The folder the row must leave as it was, prepared for the row."""
    import shutil
    kind = row[4]
    if kind == 'prior':
        shutil.copytree(bad['prior'], tmp_path / 'out')
        return str(tmp_path / 'out')
    if kind == 'fresh':
        return str(tmp_path / 'out')
    return bad[kind]


def check_one_sentence(err, prog, word):
    lines = [line for line in err.splitlines() if line.startswith(f'{prog}: error:')]
    assert len(lines) == 1, err[-3000:]
    assert word in lines[0], lines[0]
    assert 'Traceback' not in err


@pytest.mark.parametrize('row', CLI_ROWS, ids=[r[0] for r in CLI_ROWS])
def test_cli_bad_input_table(row, bad, tmp_path, capsys, monkeypatch):
    """Mutations each row catches (tried once): a check moved after the build or
    removed (the word is missing, or the run writes into --out-dir), the out-dir
    protection removed (the prior run is replaced), the damaged-state check removed
    (BadZipFile traceback)."""
    import torch

    from mmseg_erf.cli import main
    if 'CUDA' in row[3] and torch.cuda.is_available():
        pytest.skip('this torch has CUDA')
    for var in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT', 'MMSEG_ERF_DEBUG'):
        monkeypatch.delenv(var, raising=False)
    out_dir = row_out_dir(bad, row, tmp_path)
    before = snapshot(out_dir)
    assert main(cli_argv(bad, row, out_dir)) == 2
    check_one_sentence(capsys.readouterr().err, 'erf_seg.py', row[3])
    assert snapshot(out_dir) == before, 'the output directory was changed'


# one refused before the build, one after it (the in-process rows cover the rest)
SUBPROCESS_ROWS = ['config syntax error', 'class-index beyond the classes']


@pytest.mark.parametrize('name', SUBPROCESS_ROWS)
def test_cli_bad_input_real_process(name, bad, tmp_path):
    """The same rows as a user runs them: exit status 2, no traceback."""
    row = next(r for r in CLI_ROWS if r[0] == name)
    out_dir = row_out_dir(bad, row, tmp_path)
    before = snapshot(out_dir)
    env = {k: v for k, v in os.environ.items() if k != 'MMSEG_ERF_DEBUG'}
    proc = subprocess.run([sys.executable, os.path.join(REPO, 'tools', 'erf_seg.py'),
                           *cli_argv(bad, row, out_dir)], capture_output=True, text=True,
                          timeout=600, cwd=REPO, env=env)
    assert proc.returncode == 2, proc.stderr[-3000:]
    check_one_sentence(proc.stderr, 'erf_seg.py', row[3])
    assert snapshot(out_dir) == before


@pytest.mark.parametrize('how', ['flag', 'env'])
def test_debug_shows_the_traceback(how, bad, tmp_path, monkeypatch):
    """--debug (or MMSEG_ERF_DEBUG=1) lets the exception out, so Python prints its
    traceback. Mutation: main always catching -> no exception here."""
    from mmseg_erf.cli import main
    from mmseg_erf.errors import ConfigError
    argv = [bad['syntax_config'], '--out-dir', str(tmp_path / 'out')]
    if how == 'flag':
        argv.append('--debug')
    else:
        monkeypatch.setenv('MMSEG_ERF_DEBUG', '1')
    with pytest.raises(ConfigError, match='syntax error'):
        main(argv)


# ---- the same for tools/erf_compare.py ---------------------------------------------
# (id, arguments, word). --out defaults to {figs}/new/cmp.png: {figs} holds an earlier
# figure and its tables, and must come out unchanged, without the 'new' folder.
COMPARE_ROWS = [
    ('run dir missing', ['{root}/missing_run'], 'does not exist'),
    ('no metrics.json', ['{root}/empty_dir'], 'not an ERF run directory'),
    ('metrics.json cut short', ['{run_a}', '{cut_metrics}'], 'is damaged'),
    # the damaged run first: every run is checked, no short-circuit skips one
    ('metrics.json cut short, listed first', ['{cut_metrics}', '{run_a}'], 'is damaged'),
    ('metrics.json cut short, point runs', ['{point_a}', '{cut_metrics}'], 'is damaged'),
    ('map file missing, listed first', ['{missing_map}', '{run_a}'], 'is damaged'),
    ('point and centre runs together', ['{point_a}', '{run_a}'], 'one kind'),
    ('point runs, out without figure extension', ['{point_a}', '{point_b}', '--out',
                                                  '{figs}/new/cmp.txt'], 'figure extension'),
    ('metrics.json without a key', ['{run_a}', '{keyless_metrics}'], 'is damaged'),
    ('map file missing', ['{run_a}', '{missing_map}'], 'is damaged'),
    ('map file not a .npy', ['{run_a}', '{garbage_map}'], 'is damaged'),
    ('no run dir', [], 'no run directory'),
    ('labels count', ['{run_a}', '{run_b}', '--labels', 'one'], '--labels'),
    ('target absent', ['{run_a}', '--targets', 'neck.0'], 'not in run'),
    ('no common target', ['{run_a}', '{run_other_target}'], 'common'),
    ('sizes differ', ['{run_a}', '{run_48}'], '--resample'),
    ('out without figure extension', ['{run_a}', '--out', '{figs}/new/cmp.txt'],
     'figure extension'),
    ('out is a folder', ['{run_a}', '--out', '{figs}/sub.png'], 'is a folder'),
    ('out under a file', ['{run_a}', '--out', '{figs}/cmp.png/x.png'], 'cannot be created'),
    ('overlay missing', ['{run_a}', '--overlay', '{root}/none.jpg'], 'does not exist'),
    ('overlay not an image', ['{run_a}', '--overlay', '{text_file}'], 'cannot be read'),
    ('evolution missing', ['--evolution', '{root}/no_erf'], 'does not exist'),
    ('evolution without snapshots', ['--evolution', '{root}/empty_dir'], 'no iter_'),
    ('evolution with run dirs', ['{run_a}', '--evolution', '{evolution}'], 'takes no'),
    ('evolution with two targets', ['--evolution', '{evolution}', '--targets', 'a', 'b'],
     'one target'),
    ('dpi 5', ['{run_a}', '--dpi', '5'], '--dpi'),
]


@pytest.fixture(scope='module')
def runs(bad, tmp_path_factory):
    """Run directories, good and damaged, written through ERFResult itself."""
    from mmseg_erf.engine import ERFResult
    root = tmp_path_factory.mktemp('runs')
    rng = np.random.default_rng(0)

    def write(name, size=32, targets=('backbone.1', 'decode_head')):
        maps = {t: rng.random((size, size)) for t in targets}
        ERFResult.classic(maps, 2, 0, (size, size), 'tiny').write(str(root / name), images=False)
        return str(root / name)

    def write_points(name, size=16):
        from mmseg_erf.engine import ERFAccumulator, PointSpec
        acc = ERFAccumulator(['backbone.1'], (size, size))
        acc.add({'backbone.1': rng.random((2, size, size))}, [(3, 4), (10, 9)],
                [('grid_0_0', ), ('grid_1_1', )])
        acc.images = 2
        ERFResult.from_accumulator(acc, PointSpec('grid', grid=2)).write(str(root / name),
                                                                         images=False)
        return str(root / name)

    paths = dict(bad, run_a=write('a'), run_b=write('b'), run_48=write('s48', 48),
                 run_other_target=write('other', targets=('backbone.3', )),
                 point_a=write_points('pa'), point_b=write_points('pb'))
    for name in ('cut_metrics', 'keyless_metrics', 'missing_map', 'garbage_map'):
        paths[name] = write(name)
    metrics = root / 'cut_metrics' / 'metrics.json'
    metrics.write_text(metrics.read_text()[:40])
    info = json.loads((root / 'keyless_metrics' / 'metrics.json').read_text())
    del info['input_size']
    (root / 'keyless_metrics' / 'metrics.json').write_text(json.dumps(info))
    os.remove(root / 'missing_map' / 'erf_decode_head.npy')
    (root / 'garbage_map' / 'erf_decode_head.npy').write_text('garbage')
    write(os.path.join('evolution', 'iter_2'))
    paths['evolution'] = str(root / 'evolution')
    figs = root / 'figs'
    (figs / 'sub.png').mkdir(parents=True)
    for name in ('cmp.png', 'cmp.md', 'cmp.csv'):
        (figs / name).write_text(f'an earlier {name}')
    paths['figs'] = str(figs)
    return paths


def compare_argv(runs, args):
    argv = [a.format(**runs) for a in args]
    return argv if '--out' in argv else argv + ['--out', f'{runs["figs"]}/new/cmp.png']


@pytest.mark.parametrize('row', COMPARE_ROWS, ids=[r[0] for r in COMPARE_ROWS])
def test_compare_bad_input_table(row, runs, capsys):
    """Mutations: read_run without its except (JSONDecodeError/KeyError traceback),
    _check_out creating the folder again (figs/new appears)."""
    from mmseg_erf.compare import main
    before = snapshot(runs['figs'])
    assert main(compare_argv(runs, row[1])) == 2
    check_one_sentence(capsys.readouterr().err, 'erf_compare.py', row[2])
    assert snapshot(runs['figs']) == before, 'the figure folder was changed'


def test_compare_bad_input_real_process(runs):
    before = snapshot(runs['figs'])
    proc = subprocess.run([sys.executable, os.path.join(REPO, 'tools', 'erf_compare.py'),
                           *compare_argv(runs, ['{run_a}', '{cut_metrics}'])],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 2
    check_one_sentence(proc.stderr, 'erf_compare.py', 'is damaged')
    assert snapshot(runs['figs']) == before


def test_out_of_memory_saves_the_sums_and_resume_finishes(bad, tmp_path, capsys,
                                                          monkeypatch):
    """An allocation failure after the first image: exit status 2, one sentence naming
    --batch-size and --resume, the sums saved; --resume then ends with the maps of an
    uninterrupted run. Mutation: the except (RuntimeError, MemoryError) in cli._compute
    removed -> the RuntimeError escapes main."""
    import mmseg_erf.run.loop
    from mmseg_erf.cli import main
    real_feed, calls = mmseg_erf.run.loop.feed_batch, []

    def feed_then_fail(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to "
                               "allocate 8589934592 bytes")
        return real_feed(*args, **kwargs)

    argv = [TINY_CONFIG] + [a.format(**bad) for a in BASE] + ['--out-dir',
                                                              str(tmp_path / 'out')]
    monkeypatch.setattr(mmseg_erf.run.loop, 'feed_batch', feed_then_fail)
    assert main(argv) == 2
    check_one_sentence(capsys.readouterr().err, 'erf_seg.py', 'smaller --batch-size')
    assert (tmp_path / 'out' / '.erf_state' / 'rank0.npz').is_file()
    monkeypatch.setattr(mmseg_erf.run.loop, 'feed_batch', real_feed)
    assert main(argv + ['--resume']) == 0
    np.testing.assert_allclose(np.load(tmp_path / 'out' / 'erf_backbone.1.npy'),
                               np.load(os.path.join(bad['prior'], 'erf_backbone.1.npy')),
                               rtol=1e-6)
