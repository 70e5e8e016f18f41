"""The LLM Router node agent: registers a node, heartbeats its load, and looks after its runtime."""

from __future__ import annotations

from importlib import metadata

try:
    __version__ = metadata.version("llm-router")
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+src"
