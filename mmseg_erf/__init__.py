"""mmseg-erf: effective receptive fields for MMSegmentation models.

Importing the package registers its types into mmseg's registries
(``ERFHook`` in HOOKS, ``ImageFolderDataset`` in DATASETS, ``ERFResizeCrop`` in
TRANSFORMS, ``MM_VSSM`` in MODELS) and installs the safe checkpoint loader for
local files into mmengine's ``CheckpointLoader``, so configs only need
``custom_imports=dict(imports=['mmseg_erf'], allow_failed_imports=False)``.
Imported before torch, it also sets ``OMP_WAIT_POLICY=PASSIVE`` when other processes
keep the CPUs busy and the variable is not set (see :mod:`.startup`).
"""
from .startup import choose_wait_policy

# first of all: OpenMP reads its wait policy once, when torch loads it
choose_wait_policy()

from . import datasets, hooks, models  # noqa: E402,F401  (registration)
from .api import compute_erf  # noqa: E402
from .checkpoint import install_safe_loader  # noqa: E402
from .engine import ERFResult  # noqa: E402

__version__ = '0.1.0'

install_safe_loader()

__all__ = ['ERFResult', 'compute_erf', '__version__']
