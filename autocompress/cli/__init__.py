"""The command line: ``autocompress search|worker|apply|latency|profile|report|export|show``."""
from __future__ import annotations

from .main import build_parser, main

__all__ = ["main", "build_parser"]
