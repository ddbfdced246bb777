"""What the doors need to know about mmseg segmentors, configs and data batches."""
import copy
import os
import os.path as osp
from typing import Callable, List, Optional, Sequence

import torch
from mmengine.config import Config
from mmengine.model import is_model_wrapper
from torch import nn

from .engine.geometry import fit_square
from .errors import ERFUsageError
from .input_size import check_input_size  # noqa: F401  (public here since 0.1)

RESIZE_STEPS = ('Resize', 'RandomResize', 'RandomChoiceResize', 'ResizeShortestEdge',
                'ResizeToMultiple', 'ERFResizeCrop')
LABEL_STEPS = ('LoadAnnotations', 'LoadDepthAnnotation')
DEFAULT_PIPELINE = [dict(type='LoadImageFromFile'), dict(type='PackSegInputs')]


def unwrap(model: nn.Module) -> nn.Module:
    """The bare segmentor inside a DDP/FSDP wrapper."""
    return model.module if is_model_wrapper(model) else model


def batch_inputs(model: nn.Module, data_batch: dict, input_size: int) -> torch.Tensor:
    """The normalised (B, 3, S, S) tensor the segmentor consumes for one data batch.

    Each image is brought to ``S x S`` first (identity when it already is), then
    the segmentor's own ``data_preprocessor`` converts colour order, normalises
    and moves it to the model's device, exactly as in ``test_step``.
    """
    from mmseg.structures import SegDataSample
    inputs = data_batch['inputs']
    images = list(inputs) if isinstance(inputs, (list, tuple, torch.Tensor)) else [inputs]
    images = [fit_square(img, input_size) for img in images]
    # fresh samples: the preprocessor writes padding info into them, and the
    # batch's own samples belong to the evaluator
    samples = [SegDataSample() for _ in images]
    data = model.data_preprocessor(dict(inputs=images, data_samples=samples), False)
    # a test_cfg size_divisor may pad bottom/right; the ERF is defined on S x S
    return data['inputs'][..., :input_size, :input_size]


def erf_pipeline(pipeline: Optional[Sequence[dict]], input_size: int,
                 keep_labels: bool = False) -> List[dict]:
    """A config's test pipeline with its resize steps replaced by ``ERFResizeCrop``.

    Every other step (loading, custom transforms, packing) is kept, so the model
    sees what the config's pipeline produces, at the fixed ERF geometry.
    """
    steps = [copy.deepcopy(dict(t)) for t in (pipeline or DEFAULT_PIPELINE)]
    if any(t.get('type') in ('TestTimeAug', 'mmseg.TestTimeAug') for t in steps):
        raise ERFUsageError('the test pipeline uses TestTimeAug; an ERF needs one fixed '
                         'geometry: pass a pipeline without test-time augmentation')
    out, placed = [], False
    for step in steps:
        kind = str(step.get('type', '')).split('.')[-1]
        if kind in RESIZE_STEPS:
            if not placed:
                out.append(dict(type='ERFResizeCrop', size=input_size))
                placed = True
            continue
        if kind in LABEL_STEPS and not keep_labels:
            continue
        if kind == 'PackSegInputs' and not placed:
            out.append(dict(type='ERFResizeCrop', size=input_size))
            placed = True
        out.append(step)
    if not placed:
        raise ERFUsageError('the test pipeline has no PackSegInputs step; cannot place the '
                         'ERF resize: pass an mmseg test pipeline')
    return out


def config_pipeline(cfg: Config) -> Optional[List[dict]]:
    """The test (else val) dataset pipeline of a config, if it has one."""
    for key in ('test_dataloader', 'val_dataloader'):
        loader = cfg.get(key)
        if loader and loader.get('dataset') and loader['dataset'].get('pipeline'):
            return list(loader['dataset']['pipeline'])
    return cfg.get('test_pipeline')


def _local_file(source) -> bool:
    return isinstance(source, (str, os.PathLike)) and osp.isfile(source)


def _pretrained_init(cfg) -> bool:
    return isinstance(cfg, dict) and cfg.get('type') == 'Pretrained'


def disable_pretrained(node) -> List[str]:
    """Switch off every pretrained download of a model config, in place.

    mmseg configs fetch backbone weights through ``pretrained=...`` or
    ``init_cfg=dict(type='Pretrained', ...)``; with no internet (and for
    "before training" ERFs) those must not run. A local file stays: that is how
    a user puts a classification checkpoint into the backbone
    (``--cfg-options model.backbone.pretrained=ckpt_epoch_299.pth``).

    Returns:
        list[str]: the local files kept.
    """
    kept = []
    if isinstance(node, dict):
        if 'pretrained' in node:
            if _local_file(node['pretrained']):
                kept.append(os.fspath(node['pretrained']))
            else:
                node['pretrained'] = None
        init_cfg = node.get('init_cfg')
        inits = init_cfg if isinstance(init_cfg, list) else [init_cfg]
        local = [c for c in inits if _pretrained_init(c) and _local_file(c.get('checkpoint'))]
        kept += [os.fspath(c['checkpoint']) for c in local]
        remaining = [c for c in inits if not _pretrained_init(c) or c in local]
        if isinstance(init_cfg, list):
            node['init_cfg'] = remaining
        elif not remaining:
            node['init_cfg'] = None
        for value in node.values():
            kept += disable_pretrained(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            kept += disable_pretrained(value)
    return sorted(set(kept))


def resolve_config(config) -> str:
    """The file of a config given as a path or as ``<package>::<path>``.

    ``mmseg::fcn/fcn_r18-d8_4xb2-80k_cityscapes-512x1024.py`` names a config that
    ships inside the package (``<package>/.mim/configs/...``), the form mmseg's own
    configs use to inherit from each other.

    Raises:
        FileNotFoundError: naming the file looked for and the fix.
    """
    config = os.fspath(config)
    if '::' not in config:
        return config  # a path: the door checks say what is wrong with it
    import importlib.util
    package, _, relative = config.partition('::')
    spec = importlib.util.find_spec(package) if package.isidentifier() else None
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f'config {config}: no installed package {package!r}; use '
                                f'mmseg::<family>/<config>.py or a file path')
    root = osp.join(list(spec.submodule_search_locations)[0], '.mim', 'configs')
    path = osp.join(root, relative)
    if not osp.isfile(path):
        family = osp.join(root, osp.dirname(relative))
        hint = (f'the configs of {package}::{osp.dirname(relative)}/ are in {family}'
                if osp.dirname(relative) and osp.isdir(family)
                else f"{package}'s configs are in {root}")
        raise FileNotFoundError(f'config {config} does not exist; {hint}')
    return path


# OpenMMLab packages some mmseg configs build from (registry scope -> how to get it)
OPTIONAL_PACKAGES = {
    'mmdet': "pip install 'mmdet==3.3.0' (or pip install -e '.[mmdet]')",
    'mmpretrain': ("pip install 'mmpretrain==1.2.0' with a torchvision built for your "
                   "torch (PyPI's torchvision needs a CUDA torch; see the README)"),
}


def _scopes(node) -> List[str]:
    """Registry scopes named in a config node: ``type='mmdet.X'`` gives 'mmdet'."""
    found = []
    if isinstance(node, dict):
        kind = node.get('type')
        if isinstance(kind, str) and '.' in kind:
            found.append(kind.split('.')[0])
        for value in node.values():
            found += _scopes(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            found += _scopes(value)
    return found


def check_packages(cfg: Config) -> None:
    """Refuse, in one sentence, a config whose OpenMMLab packages do not import.

    Raises:
        ERFUsageError: naming the package, why it does not import and how to install it.
    """
    imports = (cfg.get('custom_imports') or {}).get('imports') or []
    imports = [imports] if isinstance(imports, str) else list(imports)
    needed = dict.fromkeys([m.split('.')[0] for m in imports] + _scopes(cfg.get('model')))
    for package in needed:
        if package not in OPTIONAL_PACKAGES:
            continue
        try:
            __import__(f'{package}.models')
        except Exception as error:  # not installed, or a dependency that does not load
            reason = str(error).strip().splitlines()[0] if str(error).strip() else \
                type(error).__name__
            raise ERFUsageError(
                f'{osp.basename(cfg.filename or "the config")} builds from {package}, which '
                f'does not import here ({reason}); install it: {OPTIONAL_PACKAGES[package]}'
            ) from None


def load_config(config, cfg_options: Optional[dict] = None) -> Config:
    if isinstance(config, Config):
        cfg = copy.deepcopy(config)
        check_packages(cfg)
    else:
        # custom_imports run after check_packages, which names a missing package
        path = resolve_config(config)
        if not osp.isfile(path):
            raise FileNotFoundError(f'config {path} does not exist; pass the path of an '
                                    f'mmseg config file or mmseg::<family>/<config>.py')
        cfg = Config.fromfile(path, import_custom_modules=False)
        check_packages(cfg)
        if cfg.get('custom_imports'):
            from mmengine.utils import import_modules_from_strings
            import_modules_from_strings(**cfg['custom_imports'])
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def _sos_token_init(module: nn.Module, rec_state_dict=None) -> None:
    """SAN's ``RecWithAttnbias.init_weights`` without a checkpoint: mmseg 1.2.2 calls
    ``super().init_weights()`` there, which ``nn.Module`` does not have; the random
    init is its token drawn as mmseg draws it, the layers at their built values."""
    from mmengine.model import normal_init
    if rec_state_dict is not None:
        raise ValueError('a checkpoint for RecWithAttnbias is loaded by mmseg itself')
    if hasattr(module, 'sos_token'):
        normal_init(module.sos_token, std=0.02)


# mmseg modules whose init_weights fails for random weights -> a working one
RANDOM_INIT_FIXES = {'RecWithAttnbias': _sos_token_init}


def _quiet_init_weights(model: nn.Module) -> None:
    """``init_weights`` without mmengine's one log record per parameter (and with
    :data:`RANDOM_INIT_FIXES` for the modules whose own one fails without weights)."""
    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel('WARNING')
    fixed = [m for m in model.modules() if type(m).__name__ in RANDOM_INIT_FIXES]
    for module in fixed:
        fix = RANDOM_INIT_FIXES[type(module).__name__]
        module.init_weights = lambda *args, _m=module, _f=fix: _f(_m, *args)
    try:
        model.init_weights()
    finally:
        logger.setLevel(level)
        for module in fixed:
            del module.init_weights


class ModelBuildError(ERFUsageError):
    """The config's model dict could not be built; ``cause`` is what the builder raised."""

    def __init__(self, cause: BaseException):
        self.cause = cause
        detail = cause.args[0] if isinstance(cause, KeyError) and cause.args else cause
        super().__init__(f'{type(cause).__name__}: {detail}')


def build_segmentor(config, checkpoint: Optional[str] = None, device: str = 'cpu',
                    cfg_options: Optional[dict] = None, trust_checkpoint: bool = False,
                    allow_partial: bool = False, seed: int = 0,
                    on_phase: Optional[Callable[[str], None]] = None):
    """Build the segmentor of an mmseg config, in eval mode, with optional weights.

    Without a checkpoint the weights are mmseg's random initialisation (pretrained
    downloads switched off; a ``pretrained`` local file in the config, such as a
    classification checkpoint for the backbone, is loaded and listed in
    ``model.pretrained_files``): the "before training" ERF, reproducible through
    ``seed`` (drawn from a forked RNG: the caller's random state is untouched),
    and identical on every process of a distributed run.

    ``on_phase`` (e.g. :meth:`mmseg_erf.startup.PhaseTimer.mark`) is called with
    ``'model build'`` (config copy, construction, initial weights) and ``'checkpoint'``
    (loading, if any, and the move to ``device``) as each ends.

    Returns:
        tuple: ``(model, cfg, load_report or None)``.

    Raises:
        ModelBuildError: the model dict does not build (unknown type, bad value).
    """
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    cfg = load_config(config, cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    local_pretrained = disable_pretrained(cfg.model)
    cfg.model.train_cfg = None
    phase = on_phase or (lambda _label: None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            model = MODELS.build(cfg.model)
        except Exception as error:  # the registry raises whatever a constructor raises
            raise ModelBuildError(error) from error
        if not checkpoint:
            _quiet_init_weights(model)
    phase('model build')
    report = None
    if checkpoint:
        from .checkpoint import load_model_weights
        report = load_model_weights(model, checkpoint, strict=not allow_partial,
                                    trust=trust_checkpoint)
    model.cfg = cfg
    # what init_weights loaded, for the doors to report (a checkpoint replaces it all)
    model.pretrained_files = () if checkpoint else tuple(local_pretrained)
    model = model.to(device).eval()
    phase('checkpoint')
    return model, cfg, report
