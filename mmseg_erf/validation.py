"""Checks at the door: a bad input is refused in one sentence, before the expensive part.

Two groups, shared by the three doors (command line, :func:`compute_erf`, ``ERFHook``):

* before anything is built: values and ranges (:func:`check_values`), the device
  (:func:`resolve_device`), paths, the config (:func:`load_config_checked`) and the
  checkpoint's file type;
* right after the model is built, before the first image: targets, the class index
  against the head's classes and the input size (:func:`check_model`).

Each door names its arguments its own way (``--num-images``, ``num_images``,
``ERFHook num_images``); a ``names`` function turns the Python name into that.
"""
import copy
import numbers
import os
import os.path as osp
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, Optional, Sequence

import torch
from torch import nn

from .errors import ConfigError, ERFUsageError, OutDirError

Names = Callable[[str], str]
LOGIT_TARGETS = ('decode_head', 'seg_logits', 'auxiliary_head', 'all')


# the API's argument names that the command line spells otherwise
_CLI_SPELLING = {'images': 'img-dir', 'labels': 'label-dir', 'cap': 'points-cap'}


def cli_name(name: str) -> str:
    return '--' + _CLI_SPELLING.get(name, name.replace('_', '-'))


def api_name(name: str) -> str:
    return name


def hook_name(name: str) -> str:
    return f'ERFHook {name}'


# ---- values -----------------------------------------------------------------------
def is_integer(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _shown(value) -> str:
    return repr(tuple(value)) if isinstance(value, (list, tuple)) else repr(value)


def check_values(names: Names = api_name, *, num_images: int = 1, input_size: int = 1,
                 batch_size: int = 1, num_workers: int = 0,
                 point: Sequence[float] = (0.5, 0.5), class_index: Optional[int] = None,
                 targets: Optional[Sequence[str]] = None, **others: int) -> None:
    """Ranges every door shares; ``others`` are further counts that must be >= 0.

    Raises:
        ERFUsageError: naming the argument, its value and what it must be.
    """
    for name, value in (('num_images', num_images), ('input_size', input_size),
                        ('batch_size', batch_size)):
        if not is_integer(value) or value < 1:
            raise ERFUsageError(f'{names(name)} must be a positive integer, got {value!r}')
    for name, value in dict(num_workers=num_workers, **others).items():
        if not is_integer(value) or value < 0:
            raise ERFUsageError(f'{names(name)} must be an integer >= 0, got {value!r}')
    values = list(point) if isinstance(point, (list, tuple)) else None
    if (values is None or len(values) != 2
            or not all(isinstance(v, numbers.Real) and 0 <= v < 1 for v in values)):
        raise ERFUsageError(f'{names("point")} {_shown(point)} must be two relative coordinates '
                            f'(y, x) in [0, 1), e.g. 0.5 0.5 for the centre')
    if class_index is not None and (not is_integer(class_index) or class_index < 0):
        raise ERFUsageError(f'{names("class_index")} must be an integer >= 0, got '
                            f'{class_index!r}')
    if targets is not None:
        listed = [targets] if isinstance(targets, str) else list(targets)
        if not listed or not all(isinstance(t, str) and t.strip() for t in listed):
            raise ERFUsageError(f'{names("targets")} must name at least one target '
                                f'(backbone.-1, decode_head, all, ...), got {targets!r}')
        if class_index is not None and not any(t in LOGIT_TARGETS for t in listed):
            raise ERFUsageError(
                f'{names("class_index")} selects a class of logit targets, and '
                f'{", ".join(listed)} has none; add decode_head or seg_logits to '
                f'{names("targets")}, or drop {names("class_index")}')


def resolve_device(device: Optional[str], names: Names = api_name) -> str:
    """The device to use (default: cuda when available), refused when this torch lacks it."""
    if device is None:
        return 'cuda' if torch.cuda.is_available() else 'cpu'
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ERFUsageError(f'{names("device")} {device!r} is not a device; use cpu, cuda '
                            f'or cuda:<index>') from None
    if parsed.type == 'cuda':
        if not torch.cuda.is_available():
            raise ERFUsageError(f'{names("device")} {device} needs CUDA, which this torch '
                                f'{torch.__version__} does not have (no CUDA build or no '
                                f'GPU); use {names("device")} cpu')
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise ERFUsageError(f'{names("device")} {device}: this machine has {count} CUDA '
                                f'device(s); use cuda:0 to cuda:{count - 1}')
    elif parsed.type == 'mps':
        if not (getattr(torch.backends, 'mps', None) and torch.backends.mps.is_available()):
            raise ERFUsageError(f'{names("device")} mps is not available in this torch; use '
                                f'{names("device")} cpu')
    elif parsed.type != 'cpu':
        raise ERFUsageError(f'{names("device")} {device} is not supported; use cpu, cuda or '
                            f'cuda:<index>')
    return device


# ---- paths ------------------------------------------------------------------------
def check_config_path(path: str) -> None:
    if not osp.exists(path):
        raise FileNotFoundError(f'config {path} does not exist; pass the path of an mmseg '
                                f'config file')
    if not osp.isfile(path):
        raise ConfigError(f'config {path} is a folder; pass the path of an mmseg config file')


def check_image_folder(path: str, argument: str = '--img-dir') -> None:
    if not osp.exists(path):
        raise FileNotFoundError(f'image folder {path} does not exist; pass {argument} with a '
                                f'folder of images')
    if not osp.isdir(path):
        raise ERFUsageError(f'{argument} {path} is a file, not a folder; pass the folder that '
                            f'holds the images')


def check_out_dir(path: str, names: Names = cli_name) -> None:
    """The output directory exists as a folder, or can be created; nothing is created here."""
    if osp.exists(path) and not osp.isdir(path):
        raise OutDirError(f'{names("out_dir")} {path} is a file; pass a folder (it is created '
                          f'when missing)')
    parent = osp.abspath(path)
    while not osp.exists(parent):
        parent = osp.dirname(parent)
    if not osp.isdir(parent):
        raise OutDirError(f'{names("out_dir")} {path} cannot be created: {parent} is a file; '
                          f'pass a folder path')
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutDirError(f'{names("out_dir")} {path} cannot be written ({parent} is not '
                          f'writable); pass a folder you can write to')


# ---- the config -------------------------------------------------------------------
def load_config_checked(path: str):
    """The parsed config, or a :class:`ConfigError` saying why it cannot be read."""
    from mmengine.config import Config
    from .segmentor import load_config
    check_config_path(path)
    try:
        return load_config(path)  # names a missing optional package (mmdet, mmpretrain)
    except ERFUsageError:
        raise
    except SyntaxError as error:
        where = f' (line {error.lineno})' if getattr(error, 'lineno', None) else ''
        detail = error.msg if isinstance(error.msg, str) else str(error)
        # mmengine re-raises with the position folded into its own message
        detail = detail.replace(f'There are syntax errors in config file {path}: ', '')
        raise ConfigError(f'config {path} has a syntax error{where}: {detail}; fix the '
                          f'file') from None
    except Exception as error:  # a missing _base_, an unknown mmseg:: name, a failed import
        raise ConfigError(f'config {path} cannot be read ({type(error).__name__}: '
                          f'{_one_line(error)}); fix the file or its _base_ and '
                          f'custom_imports') from None


def merge_options(cfg, options: Optional[Dict], names: Names = cli_name):
    """A copy of ``cfg`` with ``--cfg-options`` merged in."""
    merged = copy.deepcopy(cfg)
    if options:
        try:
            merged.merge_from_dict(options)
        except Exception as error:
            raise ConfigError(f'{names("cfg_options")} {option_text(options)} cannot be '
                              f'merged into {cfg.filename} ({_one_line(error)}); check the '
                              f'keys') from None
    return merged


def option_text(options: Dict) -> str:
    return ' '.join(f'{key}={value}' for key, value in options.items())


def _one_line(error: BaseException) -> str:
    text = error.args[0] if isinstance(error, KeyError) and error.args else error
    return ' '.join(str(text).split())


def build_model_checked(cfg, options: Optional[Dict] = None, names: Names = cli_name,
                        **build_kwargs):
    """:func:`build_segmentor` on ``cfg`` + ``options``; a model that does not build is
    refused naming the option that broke it.

    When the build fails, it is retried once without each ``model.*`` option (at most
    four): an option whose removal makes it build is the one named. The retries cost
    model constructions only, on the failure path.
    """
    from .segmentor import ModelBuildError, build_segmentor
    try:
        return build_segmentor(merge_options(cfg, options, names), **build_kwargs)
    except ModelBuildError as error:
        failure = error
    model_options = [k for k in (options or {}) if k == 'model' or k.startswith('model.')]
    culprits = [] if len(model_options) > 4 else [
        key for key in model_options
        if _builds(merge_options(cfg, {k: v for k, v in options.items() if k != key}))]
    if culprits:
        named = option_text({k: options[k] for k in culprits})
        raise ConfigError(f'{names("cfg_options")} {named} breaks the model build '
                          f'({failure}); fix or drop that option') from None
    if model_options:
        raise ConfigError(f'the model of {cfg.filename} cannot be built with '
                          f'{names("cfg_options")} {option_text(options)} ({failure}); check '
                          f'those values and the config') from None
    raise ConfigError(f'the model of {cfg.filename} cannot be built ({failure}); fix its model '
                      f'settings') from None


def _builds(cfg) -> bool:
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    from .segmentor import disable_pretrained
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    disable_pretrained(cfg.model)
    cfg.model.train_cfg = None
    try:
        with torch.random.fork_rng(devices=[]):
            MODELS.build(cfg.model)
        return True
    except Exception:
        return False


# ---- against the built model ------------------------------------------------------
@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Every module in eval mode inside the block, each one's own mode restored after
    (a check inside training must not update BatchNorm statistics or draw dropout)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def logit_channels(model: nn.Module, target: str) -> Optional[int]:
    """Classes (output channels) of a logit target's head, when the head declares them."""
    head = getattr(model, 'auxiliary_head' if target == 'auxiliary_head' else 'decode_head',
                   None)
    if isinstance(head, nn.ModuleList):
        head = head[-1] if target != 'auxiliary_head' else None
    for attr in ('out_channels', 'num_classes'):
        value = getattr(head, attr, None)
        if is_integer(value):
            return value
    return None


def check_class_index(model: nn.Module, targets: Sequence[str], class_index: Optional[int],
                      names: Names = api_name) -> None:
    if class_index is None:
        return
    for target in targets:
        if target not in LOGIT_TARGETS:
            continue
        channels = logit_channels(model, 'decode_head' if target == 'all' else target)
        if channels is not None and class_index >= channels:
            raise ERFUsageError(f'{names("class_index")} {class_index} is out of range: '
                                f'{target} has {channels} classes; pass 0 to {channels - 1}')


def check_model(model: nn.Module, taps, targets: Sequence[str], class_index: Optional[int],
                input_size: int, device, names: Names = api_name,
                probe_forward: bool = True) -> None:
    """What needs the model, checked before the first image: the targets (``taps``
    already parsed them), the class index against the head's classes and, by one
    blank forward without gradients in eval mode, the input size (which also resolves
    ``all`` and negative indices).

    ``probe_forward=False`` leaves the input size to the first real batch, which
    diagnoses a refusal with the same sentence (:func:`.api.accumulate`): a door
    whose first batch follows at once (the CLI) saves a full-size forward, while the
    hook, whose first batch comes after training has begun, keeps the probe.
    """
    from .segmentor import check_input_size
    check_class_index(model, targets, class_index, names)
    if probe_forward:
        with eval_mode(model):
            check_input_size(taps, input_size, device, cfg=getattr(model, 'cfg', None))


# ---- the launcher -----------------------------------------------------------------
def check_launcher(launcher: str, device: str) -> None:
    """A distributed launcher needs the environment its starter sets."""
    if launcher == 'pytorch':
        missing = [v for v in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')
                   if v not in os.environ]
        if missing:
            raise ERFUsageError(f'--launcher pytorch needs the environment torchrun sets '
                                f'({", ".join(missing)} missing); start with torchrun '
                                f'--nproc_per_node=N tools/erf_seg.py ... or drop --launcher')
    elif launcher in ('slurm', 'mpi') and not str(device).startswith('cuda'):
        raise ERFUsageError(f'--launcher {launcher} needs CUDA; on the CPU use torchrun '
                            f'(--launcher pytorch)')
