"""Where autocompress keeps what it caches between runs (trained demo models, measured
and learned latency models)."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$AUTOCOMPRESS_CACHE``, else ``$XDG_CACHE_HOME/autocompress``, else ``~/.cache/autocompress``."""
    root = os.environ.get("AUTOCOMPRESS_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "autocompress"
