"""Importing torchvision where its compiled ops do not load.

PyPI's torchvision wheels are built against CUDA torch.  On a CPU-only torch (such as the
``torch==2.13.0+cpu`` this project pins) torchvision's C extension does not load, and
``import torchvision`` then fails in ``torchvision/_meta_registrations.py``, which
registers fake kernels for ops that do not exist (``operator torchvision::nms does not
exist``).  The model builders need none of those ops (they are detection ops: nms,
roi_align, ...), so ``import_torchvision`` retries the import with those registrations
skipped, and says so once.  transformers imports torchvision when it is installed, so it
is imported through here too.
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
import types

log = logging.getLogger(__name__)

_META = "torchvision._meta_registrations"


def import_torchvision() -> types.ModuleType:
    """``torchvision``, imported with its fake-kernel registrations skipped where its C ops
    do not load (ImportError if it is not installed)."""
    if "torchvision" in sys.modules:
        return sys.modules["torchvision"]
    try:
        return importlib.import_module("torchvision")
    except RuntimeError as exc:
        if "torchvision::" not in str(exc):
            raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    sys.modules[_META] = types.ModuleType(_META)  # its registrations need the ops that did not load
    log.warning("torchvision's compiled ops do not load with this torch (%s); imported it without them: "
                "its model builders work, its detection ops (nms, roi_align) do not", _torch_version())
    return importlib.import_module("torchvision")


def import_transformers() -> types.ModuleType:
    """``transformers``, after torchvision where that is installed (see the module docstring)."""
    if importlib.util.find_spec("torchvision") is not None:
        import_torchvision()
    return importlib.import_module("transformers")


def import_module(name: str) -> types.ModuleType:
    """``importlib.import_module(name)``, retried once through ``import_torchvision`` when it
    failed on torchvision's missing compiled ops (a user's module importing torchvision or
    transformers on a CPU-only torch)."""
    try:
        return importlib.import_module(name)
    except RuntimeError as exc:
        if "torchvision::" not in str(exc):
            raise
    import_torchvision()
    return importlib.import_module(name)


def _torch_version() -> str:
    import torch

    return f"torch {torch.__version__}"
