"""Safe checkpoint loading for torch >= 2.6 (``weights_only=True`` by default).

mmengine's Runner pickles HistoryBuffers, numpy arrays and scalars into its
checkpoints, which the weights-only unpickler refuses, so mmengine's own
``load_checkpoint`` fails on them. Instead of falling back to full pickle (which
runs whatever code a file names), we admit exactly what mmengine writes and keep
refusing everything else unless the caller says the file is trusted.
"""
import argparse
import logging
import os
import os.path as osp
import pickle
import re
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, List, Mapping, Optional, Tuple

import torch
from mmengine.logging import HistoryBuffer, print_log

from .errors import NotACheckpointError

__all__ = ['UntrustedCheckpointError', 'CheckpointMismatchError', 'NotACheckpointError',
           'YacsCfgNode', 'LoadReport', 'check_checkpoint_file', 'load_checkpoint_file',
           'install_safe_loader', 'load_model_weights', 'register_checkpoint_describer']

TRUST_HINT = ('if the file comes from a source you trust, pass --trust-checkpoint '
              '(trust=True in Python) to load it with full pickle')


class UntrustedCheckpointError(ValueError):
    """The checkpoint holds an object outside the weights-only allow-list."""

    def __init__(self, path, offending: str):
        self.path, self.offending = str(path), offending
        super().__init__(f'refusing to unpickle checkpoint {self.path}: it contains {offending}, '
                         'which is not on the weights-only allow-list (unpickling it could run '
                         f'arbitrary code); {TRUST_HINT}')


class CheckpointMismatchError(ValueError):
    """The checkpoint's tensors do not fit the model (missing/unexpected/shape)."""


class YacsCfgNode(dict):
    """Inert stand-in for a pickled ``yacs.config.CfgNode`` (VMamba/Swin checkpoints):
    the items, read-only attribute access, no yacs code."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


_SHELL_MARK = '__mmseg_erf_yacs_cfgnode__'
_GETATTR_OWNERS = (HistoryBuffer, )  # classes whose public attributes pickles may reference


class _YacsShell:
    """Registered as ``yacs.config.CfgNode``. The weights-only unpickler fills only exact
    dict/OrderedDict objects, so a dict subclass cannot be rebuilt directly: hand it a
    marked OrderedDict and swap in a :class:`YacsCfgNode` after loading."""

    def __new__(cls, *args):
        shell = OrderedDict(args[0]) if args and type(args[0]) is dict else OrderedDict()
        shell.__dict__[_SHELL_MARK] = True
        return shell


def _describe(obj) -> str:
    if hasattr(obj, '__qualname__') and hasattr(obj, '__module__'):
        return f'{obj.__module__}.{obj.__qualname__}'
    return f'<{type(obj).__module__}.{type(obj).__qualname__} object>'


def _restricted_getattr(owner, name, *default):
    """``builtins.getattr`` as the weights-only unpickler sees it. Protocol-2 pickles
    reference methods (HistoryBuffer's statistics) as ``getattr(HistoryBuffer, 'mean')``;
    a general getattr would reach ``__globals__``/``__builtins__`` and from there
    anything, so only public attributes of the allow-listed owner classes are handed out.
    """
    if (default or not isinstance(name, str) or name.startswith('_')
            or not any(owner is cls for cls in _GETATTR_OWNERS) or not hasattr(owner, name)):
        raise pickle.UnpicklingError(
            f'mmseg_erf refused builtins.getattr({_describe(owner)}, {name!r}); only existing '
            'public attributes of allow-listed classes are reachable')
    return getattr(owner, name)


@lru_cache(maxsize=1)
def _allow_list() -> Tuple[Tuple[str, object, str], ...]:
    """``(pickled name, object it resolves to, why it is safe)`` for each entry."""
    import numpy as np
    from mmengine.config import ConfigDict
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:
        from numpy.core import multiarray  # numpy 1.x
    entries = [
        ('builtins.getattr', _restricted_getattr,
         'history buffers pickle their statistics methods as getattr(HistoryBuffer, name)'),
        ('mmengine.logging.history_buffer.HistoryBuffer', HistoryBuffer,
         'message_hub log_scalars; __setstate__ only stores arrays and statistics methods'),
        ('mmengine.config.config.ConfigDict', ConfigDict,
         'config dicts some tools store in meta; a dict with attribute access'),
        ('argparse.Namespace', argparse.Namespace,
         'training args in classification checkpoints; a plain attribute bag'),
        ('yacs.config.CfgNode', _YacsShell,
         'yacs configs (VMamba/Swin) arrive as the inert YacsCfgNode, no yacs code runs'),
        ('numpy.ndarray', np.ndarray, 'HistoryBuffer data; rebuilt from raw bytes'),
        ('numpy.dtype', np.dtype, 'dtype of pickled arrays and scalars'),
    ]
    for module in ('numpy._core.multiarray', 'numpy.core.multiarray'):
        # files name whichever module their numpy had; both map to the installed one
        entries += [
            (f'{module}._reconstruct', multiarray._reconstruct,
             'allocates the empty array that ndarray.__setstate__ fills'),
            (f'{module}.scalar', multiarray.scalar,
             'numpy scalars (e.g. eta in runtime_info) from dtype and raw bytes'),
        ]
    # numpy.dtypes.Float64DType etc.; the BUILD of a pickled dtype checks its class
    for dtype_cls in dict.fromkeys(type(np.dtype(code)) for code in np.typecodes['All']):
        entries.append((f'{dtype_cls.__module__}.{dtype_cls.__qualname__}', dtype_cls,
                        'class of a rebuilt numpy dtype; its __setstate__ only reads flags'))
    return tuple(entries)


def _offending(message: str) -> str:
    """The rejected global/type named in torch's (or our getattr's) error text."""
    patterns = (r'(builtins\.getattr\(.*\)); only existing', r'GLOBAL (\S+) was not an allowed',
                r'unsupported GLOBAL (\S+) whose module',
                r'unrecognized function (.+?)(?: which|$)', r"but got <class '([^']+)'>",
                r'(\S+) must be imported to load')
    for pattern in patterns:
        match = re.search(pattern, message, re.MULTILINE)
        if match:
            # torch prints builtins without their module ("GLOBAL eval")
            return match.group(1) if '.' in match.group(1) else f'builtins.{match.group(1)}'
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return f'an object the weights-only unpickler rejects ({lines[-1] if lines else message})'


def _swap_shells(obj, memo: dict):
    """Replace marked OrderedDicts with :class:`YacsCfgNode`, in place where possible."""
    if id(obj) in memo:
        return memo[id(obj)][1]
    if type(obj) is OrderedDict and obj.__dict__.get(_SHELL_MARK):
        node = YacsCfgNode()
        memo[id(obj)] = (obj, node)  # holding obj keeps its id from being reused
        node.update((k, _swap_shells(v, memo)) for k, v in obj.items())
        return node
    if type(obj) in (dict, OrderedDict, list):
        memo[id(obj)] = (obj, obj)
        items = obj.items() if isinstance(obj, dict) else enumerate(obj)
        for key, value in list(items):
            new = _swap_shells(value, memo)
            if new is not value:
                obj[key] = new
    elif type(obj) is tuple:
        new = tuple(_swap_shells(value, memo) for value in obj)
        memo[id(obj)] = (obj, new if any(a is not b for a, b in zip(new, obj)) else obj)
        return memo[id(obj)][1]
    return obj


# torch.save writes a zip archive (torch >= 1.6) or, in the legacy format, a pickle
# stream whose first opcode is PROTO (0x80)
_CHECKPOINT_MAGIC = (b'PK\x03\x04', b'\x80')


def check_checkpoint_file(path) -> None:
    """Refuse, from its first bytes, a file that cannot be a torch checkpoint (before a
    model is built; a text file or image would make the weights-only unpickler blame the
    allow-list): FileNotFoundError, or NotACheckpointError (empty, folder, not zip/pickle)."""
    path = osp.expanduser(os.fspath(path))
    if osp.isdir(path):
        raise NotACheckpointError(f'checkpoint {path} is a folder, not a checkpoint; pass '
                                  f'the .pth file')
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint {path} does not exist; check the path')
    with open(path, 'rb') as f:
        head = f.read(4)
    if not head.startswith(_CHECKPOINT_MAGIC):
        what = 'an empty file' if not head else 'neither a zip archive nor a pickle'
        raise NotACheckpointError(f'{path} is not a checkpoint ({what}, which torch.save '
                                  f'never writes); pass the .pth file the training wrote')


def _cut_short(error: BaseException) -> bool:
    """torch.load failed on the structure: a short legacy pickle, a broken zip archive."""
    return isinstance(error, EOFError) or (isinstance(error, RuntimeError) and any(
        word in str(error) for word in ('zip archive', 'PytorchStreamReader')))


def _damaged(path, error: BaseException) -> NotACheckpointError:
    reason = ' '.join(str(error).split('.')[0].split()) or type(error).__name__
    return NotACheckpointError(f'{path} is not a checkpoint torch can read (truncated or '
                               f'damaged: {reason}); download or copy it again')


def load_checkpoint_file(path, map_location='cpu', trust: bool = False):
    """Load a checkpoint file, refusing pickled code unless ``trust`` is set.

    Args:
        path (str | PathLike): Local checkpoint file.
        map_location: Same as :func:`torch.load`. Defaults to 'cpu'.
        trust (bool): Load with full pickle (``weights_only=False``), which can
            run arbitrary code; only for files from a trusted source.

    Returns the unpickled object, usually a dict. Raises UntrustedCheckpointError without
    ``trust`` when the file holds an object outside the allow-list (:func:`_allow_list`).
    """
    path = osp.expanduser(os.fspath(path))
    check_checkpoint_file(path)
    if trust:
        print_log(f'Loading {path} with full pickle trust (weights_only=False): it can run '
                  'arbitrary code and must come from a trusted source', logger='current',
                  level=logging.WARNING)
        try:
            return torch.load(path, map_location=map_location, weights_only=False)
        except (EOFError, pickle.UnpicklingError, RuntimeError) as error:
            if not _cut_short(error) and not isinstance(error, pickle.UnpicklingError):
                raise
            raise _damaged(path, error) from None
    present = set(torch.serialization.get_safe_globals())
    # only add what is missing, so leaving the context does not drop the caller's own entries
    extra = [(obj, name) for name, obj, _ in _allow_list() if (obj, name) not in present]
    HistoryBuffer()  # registers the default statistics, so the snapshot holds them
    statistics = dict(HistoryBuffer._statistics_methods)
    try:
        with torch.serialization.safe_globals(extra):
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise UntrustedCheckpointError(path, _offending(str(error))) from None
    except (EOFError, RuntimeError) as error:
        if not _cut_short(error):
            raise
        raise _damaged(path, error) from None
    finally:
        # HistoryBuffer.__setstate__ writes the file's statistics methods into a class-wide
        # dict: a file must not rebind e.g. 'mean' for the whole process
        HistoryBuffer._statistics_methods.clear()
        HistoryBuffer._statistics_methods.update(statistics)
    return _swap_shells(checkpoint, {})


_LOCAL_TRUST = False


def _load_from_local(filename, map_location=None):
    """mmengine's local-file scheme, with :func:`load_checkpoint_file`."""
    return load_checkpoint_file(filename, map_location=map_location, trust=_LOCAL_TRUST)


def install_safe_loader(trust: bool = False) -> None:
    """Local checkpoints of mmengine (``load_checkpoint``, ``Runner.load_checkpoint``,
    ``Runner.resume``) through :func:`load_checkpoint_file`, with full pickle if ``trust``;
    other schemes (http, openmmlab) stay. Calling it again only updates ``trust``."""
    global _LOCAL_TRUST
    from mmengine.runner import CheckpointLoader
    _LOCAL_TRUST = bool(trust)
    if CheckpointLoader._schemes.get('') is not _load_from_local:
        CheckpointLoader.register_scheme(prefixes='', loader=_load_from_local, force=True)


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_model_weights` loaded.

    Attributes:
        path (str | None): The file, or None when a loaded dict was passed.
        missing_keys (tuple): Model keys the checkpoint lacks.
        unexpected_keys (tuple): Checkpoint keys the model lacks.
        shape_mismatches (tuple): ``(key, checkpoint shape, model shape)``, not loaded.
        trusted (bool): Whether this call unpickled the file with full trust.
        note (str | None): For a file written for another model: what it filled, what not.
    """
    path: Optional[str]
    missing_keys: Tuple[str, ...]
    unexpected_keys: Tuple[str, ...]
    shape_mismatches: Tuple[Tuple[str, tuple, tuple], ...]
    trusted: bool
    note: Optional[str] = None

    def __str__(self):
        def some(items):
            return ', '.join(map(str, items[:5])) + (', ...' if len(items) > 5 else '')

        mism = [f'{k}: checkpoint {tuple(a)} vs model {tuple(b)}'
                for k, a, b in self.shape_mismatches]
        parts = [f'{len(items)} {kind} ({some(items)})' for kind, items in (
            ('missing keys', self.missing_keys), ('unexpected keys', self.unexpected_keys),
            ('shape mismatches', mism)) if items]
        return '; '.join(parts) or 'all keys matched'


# filled by model packages when imported (models.vmamba does), so that none is imported here
_DESCRIBERS: List[Callable] = []
_ADAPTERS: List[Callable] = []


def register_checkpoint_describer(describe=None, *, adapt=None) -> None:
    """``describe(model, state_dict) -> str | None``: why a state dict does not fit
    ``model`` (e.g. which config builds what it holds), instead of the key lists.
    ``adapt(model, checkpoint, source) -> (state_dict, note) | None``, asked when the names
    do not fit: for a file written for another model (a classifier with the same backbone)
    the tensors it supplies, in the model's names, and one line for the log; None for a
    file it does not know; CheckpointMismatchError for one the model cannot take."""
    for registry, function in ((_DESCRIBERS, describe), (_ADAPTERS, adapt)):
        if function is not None and function not in registry:
            registry.append(function)


def _state_dict_of(checkpoint, source) -> Mapping:
    if not isinstance(checkpoint, Mapping):
        raise CheckpointMismatchError(f'{source} holds a {type(checkpoint).__name__}, not a '
                                      'checkpoint dict or state dict')
    for key in ('state_dict', 'model'):
        if isinstance(checkpoint.get(key), Mapping):
            return checkpoint[key]
    if any(isinstance(value, torch.Tensor) for value in checkpoint.values()):
        return checkpoint
    raise CheckpointMismatchError(
        f'no state dict in {source}: expected a "state_dict" or "model" entry or a dict of '
        f'tensors, got keys {sorted(map(str, checkpoint))[:10]}')


def _rename_legacy_keys(model: torch.nn.Module, state_dict: dict) -> None:
    """Modules that know older names of their parameters (MM_VSSM) rename them first."""
    for name, module in model.named_modules():
        if hasattr(module, 'rename_legacy_keys'):
            module.rename_legacy_keys(state_dict, f'{name}.' if name else '')


def load_model_weights(model: torch.nn.Module, path_or_checkpoint, *, strict: bool = True,
                       trust: bool = False, revise_keys=((r'^module\.', ''), ),
                       logger=None) -> LoadReport:
    """Load checkpoint weights into ``model``; :class:`LoadReport` says what did not fit.

    Args:
        model (nn.Module): The model to fill.
        path_or_checkpoint (str | PathLike | dict): A checkpoint file, a loaded checkpoint
            (with 'state_dict' or 'model') or a bare state dict. One written for another
            model that a registered adapter knows (a VMamba ImageNet or COCO checkpoint for
            a segmentor) fills what it supplies; a warning and its note say what is random.
        strict (bool): Raise CheckpointMismatchError on any key that does not fit (on a
            file an adapter knows but the model cannot take, always); False loads what
            fits. Shape-mismatched tensors are never loaded. Defaults to True.
        trust (bool): Unpickle the file with full trust (:func:`load_checkpoint_file`).
        revise_keys (Sequence[tuple]): ``(pattern, replacement)`` for every checkpoint
            key. Defaults to stripping ``module.``.
        logger (logging.Logger | str | None): Where to log. Defaults to 'current'.
    """
    if isinstance(path_or_checkpoint, Mapping):
        path, checkpoint, source = None, path_or_checkpoint, 'the given checkpoint dict'
    elif isinstance(path_or_checkpoint, (str, os.PathLike)):
        path = os.fspath(path_or_checkpoint)
        checkpoint, source = load_checkpoint_file(path, 'cpu', trust), f'checkpoint {path}'
    else:
        raise TypeError('path_or_checkpoint must be a file path or a checkpoint dict, got '
                        f'{type(path_or_checkpoint).__name__}')
    state_dict = _state_dict_of(checkpoint, source)
    revised = OrderedDict()
    for key, value in state_dict.items():
        for pattern, replacement in revise_keys:
            key = re.sub(pattern, replacement, key)
        revised[key] = value
    _rename_legacy_keys(model, revised)
    own, note = model.state_dict(), None
    if own.keys() != revised.keys():
        adapted = next(filter(None, (a(model, checkpoint, source) for a in _ADAPTERS)), None)
        if adapted is not None:
            revised, note = adapted
            print_log(note, logger=logger or 'current', level=logging.WARNING)
    mismatches = tuple((key, tuple(revised[key].shape), tuple(own[key].shape)) for key in own
                       if key in revised and isinstance(revised[key], torch.Tensor)
                       and isinstance(own[key], torch.Tensor)  # not _extra_state
                       and revised[key].shape != own[key].shape)
    report = LoadReport(path=path, missing_keys=tuple(k for k in own if k not in revised),
                        unexpected_keys=tuple(k for k in revised if k not in own),
                        shape_mismatches=mismatches, trusted=bool(trust and path), note=note)
    if strict and not note and (report.missing_keys or report.unexpected_keys or mismatches):
        hint = next(filter(None, (describe(model, revised) for describe in _DESCRIBERS)), None)
        if hint:
            raise CheckpointMismatchError(f'{source} does not fit the model: {hint}')
        raise CheckpointMismatchError(
            f'{source} does not fit {type(model).__name__}: {report}. Pass --allow-partial '
            '(strict=False in Python) to load the tensors that fit anyway')
    skip = set(report.unexpected_keys) | {key for key, _, _ in mismatches}
    fitting = OrderedDict((k, v) for k, v in revised.items() if k not in skip)
    # BatchNorm & co. read their version from _metadata; keep it as mmengine does
    fitting._metadata = getattr(state_dict, '_metadata', OrderedDict())
    model.load_state_dict(fitting, strict=False)
    print_log(f'loaded {source} into {type(model).__name__}: {report}',
              logger=logger or 'current', level=logging.DEBUG)
    return report
