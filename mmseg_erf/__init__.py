# TEMPORARY while helpers write models/ and checkpoint.py
from . import datasets, hooks  # noqa
try:
    from . import models  # noqa
except ImportError:
    pass
from .api import compute_erf
from .engine import ERFResult
try:
    from .checkpoint import install_safe_loader
    install_safe_loader()
except ImportError:
    pass
