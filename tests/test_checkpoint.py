"""Safe loading of runner-written checkpoints under torch >= 2.6 (mmseg_erf.checkpoint)."""
import argparse
import collections
import os
import pickle
import shlex
import sys
import types
import uuid

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.logging import HistoryBuffer
from mmengine.model import BaseModel
from mmengine.runner import CheckpointLoader, Runner, load_checkpoint
from mmengine.runner.checkpoint import load_from_http, load_from_local
from torch.utils.data import Dataset

from mmseg_erf.checkpoint import (CheckpointMismatchError, LoadReport, UntrustedCheckpointError,
                                  YacsCfgNode, install_safe_loader, load_checkpoint_file,
                                  load_model_weights)

TORCH_GE_26 = tuple(int(p) for p in torch.__version__.split('+')[0].split('.')[:2]) >= (2, 6)


class ToyModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 1)

    def forward(self, inputs, labels=None, mode='tensor'):
        out = self.fc(inputs).squeeze(-1)
        if mode == 'loss':
            return dict(loss=((out - labels)**2).mean())
        return out


class ToyDataset(Dataset):
    metainfo = dict(classes=('background', 'thing'), palette=[[0, 0, 0], [255, 0, 0]])

    def __len__(self):
        return 4

    def __getitem__(self, index):
        return dict(inputs=torch.full((2, ), float(index)), labels=torch.tensor(float(index)))


class Payload:
    """A custom class: not on any allow-list, loadable only with trust."""

    def __init__(self, value):
        self.value = value


class Reducer:
    """Pickles as ``func(*args)``: how a malicious file smuggles in a call."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def make_runner(work_dir, max_iters=2, **kwargs):
    return Runner(
        model=ToyModel(), work_dir=str(work_dir), experiment_name=f'ckpt_{uuid.uuid4().hex}',
        train_dataloader=dict(dataset=ToyDataset(), batch_size=2, collate_fn=dict(
            type='default_collate'), sampler=dict(type='DefaultSampler', shuffle=False)),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        param_scheduler=dict(type='MultiStepLR', milestones=[1], by_epoch=False),
        train_cfg=dict(by_epoch=False, max_iters=max_iters, val_interval=1000),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1, by_epoch=False)),
        default_scope=None, log_level='WARNING', **kwargs)


@pytest.fixture(scope='module')
def runner_ckpt(tmp_path_factory):
    """A checkpoint exactly as mmengine's Runner/CheckpointHook writes it."""
    work_dir = tmp_path_factory.mktemp('runner')
    make_runner(work_dir).train()
    return str(work_dir / 'iter_2.pth')


@pytest.mark.skipif(not TORCH_GE_26, reason='needs torch >= 2.6 (older torch loads with full pickle)')
def test_plain_torch_load_refuses_runner_checkpoint(runner_ckpt):
    # the problem this module solves: torch's default and mmengine's own loader both fail
    with pytest.raises(pickle.UnpicklingError):
        torch.load(runner_ckpt)
    with pytest.raises(pickle.UnpicklingError):
        load_from_local(runner_ckpt, 'cpu')


def test_load_checkpoint_file_reads_runner_checkpoint(runner_ckpt):
    ckpt = load_checkpoint_file(runner_ckpt)
    assert set(ckpt) >= {'meta', 'state_dict', 'message_hub', 'optimizer', 'param_schedulers'}
    loss = ckpt['message_hub']['log_scalars']['train/loss']
    assert isinstance(loss, HistoryBuffer) and len(loss.data[0]) == 2
    assert np.isfinite(loss.mean()) and loss.statistics('current') == loss.current()
    assert isinstance(ckpt['message_hub']['runtime_info']['eta'], np.floating)
    assert ckpt['meta']['dataset_meta']['classes'] == ('background', 'thing')
    assert ckpt['meta']['iter'] == 2 and isinstance(ckpt['meta']['cfg'], str)
    assert ckpt['state_dict']['fc.weight'].shape == (1, 2)
    assert isinstance(ckpt['param_schedulers'][0]['milestones'], collections.Counter)
    # the allow-list is scoped to the call: torch's global safe set is left as it was
    assert not any('getattr' in str(entry) for entry in torch.serialization.get_safe_globals())


def test_install_safe_loader_serves_mmengine(runner_ckpt):
    install_safe_loader()
    install_safe_loader()  # idempotent
    local = CheckpointLoader._get_checkpoint_loader('/some/file.pth')
    assert local is not load_from_local and local.__module__ == 'mmseg_erf.checkpoint'
    assert CheckpointLoader._get_checkpoint_loader('https://host/x.pth') is load_from_http
    assert list(CheckpointLoader._schemes).count('') == 1
    model = ToyModel()
    ckpt = load_checkpoint(model, runner_ckpt, map_location='cpu')
    assert torch.equal(model.fc.weight, ckpt['state_dict']['fc.weight'])


def test_runner_resume(runner_ckpt, tmp_path):
    install_safe_loader()
    runner = make_runner(tmp_path, max_iters=3, load_from=runner_ckpt, resume=True)
    runner.train()
    assert runner.iter == 3
    # two resumed loss values plus the new one: the message hub really came back
    assert len(runner.message_hub.get_scalar('train/loss').data[0]) == 3


def test_malicious_pickle_is_refused_and_not_run(tmp_path):
    marker = tmp_path / 'pwned'
    path = tmp_path / 'evil.pth'
    command = f'echo pwned > {shlex.quote(str(marker))}'
    torch.save({'state_dict': {}, 'x': Reducer(os.system, (command, ))}, path)
    with pytest.raises(UntrustedCheckpointError) as info:
        load_checkpoint_file(path)
    message = str(info.value)
    assert 'posix.system' in message or 'os.system' in message or 'nt.system' in message
    assert '--trust-checkpoint' in message and str(path) in message
    install_safe_loader()
    with pytest.raises(UntrustedCheckpointError):
        load_checkpoint(ToyModel(), str(path))
    assert not marker.exists()


@pytest.mark.parametrize('owner, name', [
    (HistoryBuffer.update, '__globals__'),  # reach a module namespace through an allowed class
    (HistoryBuffer, '__init__'),  # private attributes of the allowed owner
    (collections.OrderedDict, 'fromkeys'),  # an owner that is not allow-listed
    (HistoryBuffer, 'no_such_method'),
])
def test_restricted_getattr_refuses(tmp_path, owner, name):
    path = tmp_path / 'getattr.pth'
    torch.save({'x': Reducer(getattr, (owner, name))}, path)
    with pytest.raises(UntrustedCheckpointError) as info:
        load_checkpoint_file(path)
    # refused by our restricted getattr (it names owner and attribute), not by torch's list
    assert info.value.offending.startswith('builtins.getattr(')
    assert info.value.offending.endswith(f', {name!r})')


def test_restricted_getattr_admits_history_buffer_statistics(tmp_path):
    path = tmp_path / 'getattr.pth'
    torch.save({'x': Reducer(getattr, (HistoryBuffer, 'mean'))}, path)
    assert load_checkpoint_file(path)['x'] is HistoryBuffer.mean
    # plain torch still refuses it: nothing was left registered globally
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)


def test_safe_load_keeps_process_wide_statistics(tmp_path):
    path = tmp_path / 'buffer.pth'
    buffer = HistoryBuffer([1.0, 3.0], [1, 1])
    HistoryBuffer._statistics_methods['mean'] = HistoryBuffer.max  # the file will carry this
    try:
        torch.save({'buffer': buffer}, path)
    finally:
        HistoryBuffer._statistics_methods['mean'] = HistoryBuffer.mean
    loaded = load_checkpoint_file(path)['buffer']
    assert HistoryBuffer._statistics_methods['mean'] is HistoryBuffer.mean
    assert loaded.statistics('mean') == 2.0


def test_trust_loads_custom_class(tmp_path, monkeypatch):
    path = tmp_path / 'custom.pth'
    torch.save({'payload': Payload(3), 'state_dict': {'w': torch.ones(1)}}, path)
    with pytest.raises(UntrustedCheckpointError, match=r'test_checkpoint\.Payload'):
        load_checkpoint_file(path)
    logged = []
    monkeypatch.setattr('mmseg_erf.checkpoint.print_log',
                        lambda msg, logger=None, level=None: logged.append(msg))
    assert load_checkpoint_file(path, trust=True)['payload'].value == 3
    assert any('full pickle trust' in msg and str(path) in msg for msg in logged)
    install_safe_loader(trust=True)  # what a --trust-checkpoint command line does for mmengine
    try:
        model = ToyModel()
        model.fc.weight.data.fill_(2.0)
        torch.save({'state_dict': model.state_dict(), 'payload': Payload(4)}, path)
        assert load_checkpoint(ToyModel(), str(path))['payload'].value == 4
    finally:
        install_safe_loader()
    with pytest.raises(UntrustedCheckpointError):
        load_checkpoint(ToyModel(), str(path))


def test_yacs_config_loads_as_inert_stand_in(tmp_path, monkeypatch):
    yacs = types.ModuleType('yacs')
    config = types.ModuleType('yacs.config')

    class CfgNode(dict):  # what yacs keeps in __dict__, so pickles carry a BUILD state too

        def __init__(self, init=None):
            super().__init__(init or {})
            self.__dict__.update({'__immutable__': False, '__deprecated_keys__': set(),
                                  '__renamed_keys__': {}, '__new_allowed__': False})

        def __getattr__(self, name):
            if name in self:
                return self[name]
            raise AttributeError(name)

    CfgNode.__module__, CfgNode.__qualname__ = 'yacs.config', 'CfgNode'
    config.CfgNode, yacs.config = CfgNode, config
    monkeypatch.setitem(sys.modules, 'yacs', yacs)
    monkeypatch.setitem(sys.modules, 'yacs.config', config)
    shared = CfgNode({'NAME': 'imagenet'})
    cfg = CfgNode({'MODEL': CfgNode({'TYPE': 'vssm', 'DEPTHS': [2, 2, 9, 2]}), 'DATA': shared,
                   'EVAL': (shared, 1)})
    path = tmp_path / 'vmamba.pth'
    torch.save({'model': {'fc.weight': torch.ones(1, 2), 'fc.bias': torch.zeros(1)},
                'config': cfg, 'max_accuracy': 82.5, 'epoch': 299,
                'args': argparse.Namespace(cfg='vssm.yaml')}, path)
    monkeypatch.delitem(sys.modules, 'yacs.config')
    monkeypatch.delitem(sys.modules, 'yacs')

    ckpt = load_checkpoint_file(path)
    assert 'yacs.config' not in sys.modules  # nothing imported, no yacs code ran
    loaded = ckpt['config']
    assert type(loaded) is YacsCfgNode and type(loaded['MODEL']) is YacsCfgNode
    assert loaded.MODEL.TYPE == 'vssm' and loaded.MODEL.DEPTHS == [2, 2, 9, 2]
    assert loaded.DATA is loaded.EVAL[0] and type(loaded.DATA) is YacsCfgNode
    assert ckpt['args'].cfg == 'vssm.yaml'
    report = load_model_weights(ToyModel(), str(path))
    assert report == LoadReport(str(path), (), (), (), False)


def _mismatched_checkpoint():
    state = {f'module.extra.{i}': torch.zeros(1) for i in range(6)}
    state.update({'module.fc.weight': torch.full((3, 2), 7.0)})  # model has (1, 2)
    return {'state_dict': state}  # fc.bias missing


def test_load_model_weights_strict_mismatch_message():
    model = ToyModel()
    with pytest.raises(CheckpointMismatchError) as info:
        load_model_weights(model, _mismatched_checkpoint())
    message = str(info.value)
    assert '1 missing keys (fc.bias)' in message
    assert '6 unexpected keys (extra.0, extra.1, extra.2, extra.3, extra.4, ...)' in message
    assert '1 shape mismatches (fc.weight: checkpoint (3, 2) vs model (1, 2))' in message
    assert '--allow-partial' in message and 'ToyModel' in message


def test_load_model_weights_partial_report():
    model = ToyModel()
    before = model.fc.weight.detach().clone()
    ckpt = _mismatched_checkpoint()
    ckpt['state_dict']['module.fc.bias'] = torch.full((1, ), 5.0)
    report = load_model_weights(model, ckpt, strict=False)
    assert report.path is None and not report.trusted and report.missing_keys == ()
    assert report.unexpected_keys == tuple(f'extra.{i}' for i in range(6))
    assert report.shape_mismatches == (('fc.weight', (3, 2), (1, 2)), )
    assert torch.equal(model.fc.weight, before)  # mismatched shapes are never loaded
    assert model.fc.bias.item() == 5.0
    with pytest.raises(Exception):
        report.missing_keys = ('x', )  # frozen


def test_load_model_weights_sources(tmp_path):
    model, other = ToyModel(), ToyModel()
    bare = tmp_path / 'bare.pth'
    torch.save(other.state_dict(), bare)
    assert str(load_model_weights(model, bare)) == 'all keys matched'
    assert torch.equal(model.fc.weight, other.fc.weight)
    assert load_model_weights(model, {'model': other.state_dict()}).path is None
    with pytest.raises(CheckpointMismatchError, match='no state dict'):
        load_model_weights(model, {'epoch': 3})
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        load_model_weights(model, str(tmp_path / 'missing.pth'))


def test_numpy_1_and_2_module_names_both_load(tmp_path):
    raw = tmp_path / 'raw.pth'
    # the legacy format keeps the pickle uncompressed, so the GLOBAL names can be rewritten
    torch.save({'a': np.arange(3.0), 's': np.float32(1.5)}, raw,
               _use_new_zipfile_serialization=False)
    numpy1 = raw.read_bytes().replace(b'numpy._core.multiarray', b'numpy.core.multiarray')
    numpy2 = numpy1.replace(b'numpy.core.multiarray', b'numpy._core.multiarray')
    for name, data in (('numpy.core', numpy1), ('numpy._core', numpy2)):
        assert name.encode() + b'.multiarray\n_reconstruct' in data
        path = tmp_path / f'{name}.pth'
        path.write_bytes(data)
        ckpt = load_checkpoint_file(path)
        assert ckpt['a'].tolist() == [0.0, 1.0, 2.0] and ckpt['s'] == np.float32(1.5)


def test_registered_describers_and_adapters(monkeypatch):
    """Model packages teach the loader about their checkpoints without being imported by
    it: a describer replaces the key lists of the strict error, an adapter fills the model
    from a file written for another model and its note is reported."""
    import mmseg_erf.checkpoint as checkpoint
    monkeypatch.setattr(checkpoint, '_DESCRIBERS', [])
    monkeypatch.setattr(checkpoint, '_ADAPTERS', [])
    model, asked = ToyModel(), []

    def describe(model, state_dict):
        asked.append(sorted(state_dict))
        return 'it holds a classifier; use toy.py' if 'classifier.w' in state_dict else None

    def adapt(model, ckpt, source):
        if 'w' not in ckpt:
            return None
        return {'fc.weight': ckpt['w']}, f'fc.weight from {source}; fc.bias is RANDOM'

    checkpoint.register_checkpoint_describer(describe)
    checkpoint.register_checkpoint_describer(describe)  # once only
    with pytest.raises(CheckpointMismatchError, match='^the given checkpoint dict does not '
                       'fit the model: it holds a classifier; use toy.py$'):
        load_model_weights(model, {'classifier.w': torch.zeros(1)})
    with pytest.raises(CheckpointMismatchError, match='missing keys'):  # no answer: the lists
        load_model_weights(model, {'other': torch.zeros(1)})
    assert asked == [['classifier.w'], ['other']]
    checkpoint.register_checkpoint_describer(adapt=adapt)
    report = load_model_weights(model, {'w': torch.full((1, 2), 3.0)})  # strict, yet loaded
    assert torch.equal(model.fc.weight, torch.full((1, 2), 3.0))
    assert report.note == 'fc.weight from the given checkpoint dict; fc.bias is RANDOM'
    assert report.missing_keys == ('fc.bias', ) and not report.unexpected_keys
    assert load_model_weights(model, model.state_dict()).note is None  # names fit: not asked


def _imports(path):
    """(module-level?, absolute module name) of every import in ``path``."""
    import ast
    package = '.'.join(['mmseg_erf', *filter(None, os.path.dirname(
        os.path.relpath(path, PACKAGE)).split(os.sep))])
    tree = ast.parse(open(path).read())
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = package.split('.')[:len(package.split('.')) - node.level + 1] \
                if node.level else []
            module = '.'.join(base + ([node.module] if node.module else []))
            names = [f'{module}.{alias.name}' for alias in node.names] + [module]
            found += [(id(node) in top, name) for name in names]
        elif isinstance(node, ast.Import):
            found += [(id(node) in top, alias.name) for alias in node.names]
    return found


PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       'mmseg_erf')


def test_checkpoint_and_vmamba_import_no_circle():
    """mmseg_erf.checkpoint imports no model package (the packages register into it), and
    checkpoint.py with models/vmamba/*.py import each other in one direction only, at
    module level: no function-level import papers over a circle."""
    import glob
    files = [os.path.join(PACKAGE, 'checkpoint.py'),
             *glob.glob(os.path.join(PACKAGE, 'models', 'vmamba', '*.py'))]
    modules = {}
    for path in files:
        rel = os.path.splitext(os.path.relpath(path, os.path.dirname(PACKAGE)))[0]
        modules['.'.join(rel.split(os.sep)).replace('.__init__', '')] = _imports(path)
    assert not [name for _, name in modules['mmseg_erf.checkpoint']
                if name.startswith('mmseg_erf.models')]
    edges = {module: {name for _, name in found if name in modules and name != module}
             for module, found in modules.items()}
    late = [(module, name) for module, found in modules.items() for top, name in found
            if not top and name in modules]
    assert late == []
    done, stack = set(), []

    def visit(module):  # depth-first: a module met again on the stack closes a circle
        assert module not in stack, ' -> '.join(stack[stack.index(module):] + [module])
        if module in done:
            return
        stack.append(module)
        for other in sorted(edges[module]):
            visit(other)
        stack.pop()
        done.add(module)

    for module in sorted(edges):
        visit(module)
