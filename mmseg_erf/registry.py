"""This package's model registry: scope ``mmseg_erf``, a child of mmseg's MODELS.

Configs of this repo name ``type='mmseg_erf.MM_VSSM'``, which mmengine resolves
through mmseg's MODELS to this registry (and imports this module by itself when
it sees the scope), whatever else is registered as ``MM_VSSM`` in mmseg. The
plain name ``MM_VSSM`` is an alias in mmengine's root MODELS, which mmseg's
registry falls back to only when it has no ``MM_VSSM`` of its own: a host that
registers its own (VMamba's segmentation/model.py) keeps its name, before or
after ``import mmseg_erf``. See docs/DESIGN.md.
"""
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry
from mmseg.registry import MODELS as MMSEG_MODELS

__all__ = ['MODELS', 'register_fallback_alias']

MODELS = Registry('model', parent=MMSEG_MODELS, scope='mmseg_erf',
                  locations=['mmseg_erf.models'])


def register_fallback_alias(cls, name: str) -> None:
    """Make ``name`` find ``cls`` from mmseg's MODELS unless mmseg registers its own.

    Registered in mmengine's root MODELS (the parent mmseg's registry searches
    last), never in mmseg's: a later ``MODELS.register_module()`` of the same
    name in mmseg then neither fails nor is shadowed.
    """
    if MMENGINE_MODELS.get(name) is None:  # None: not in the root (get may search up)
        MMENGINE_MODELS.register_module(name=name, module=cls)
