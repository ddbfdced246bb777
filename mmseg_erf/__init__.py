"""mmseg-erf: effective receptive fields for MMSegmentation models.

Importing the package registers its types into mmseg's registries
(``ERFHook`` in HOOKS, ``ImageFolderDataset`` in DATASETS, ``ERFResizeCrop`` in
TRANSFORMS, ``MM_VSSM`` in MODELS) and installs the safe checkpoint loader for
local files into mmengine's ``CheckpointLoader``, so configs only need
``custom_imports=dict(imports=['mmseg_erf'], allow_failed_imports=False)``.
"""
from . import datasets, hooks, models  # noqa: F401  (registration)
from .api import compute_erf
from .checkpoint import install_safe_loader
from .engine import ERFResult

__version__ = '0.1.0'

install_safe_loader()

__all__ = ['ERFResult', 'compute_erf', '__version__']
