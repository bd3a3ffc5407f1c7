"""The nextocc cache directory (built models, hardware probes)."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV_VAR = "NEXTOCC_CACHE_DIR"


def cache_dir() -> Path:
    """The nextocc cache directory (``$NEXTOCC_CACHE_DIR``, else the platform user cache dir)."""
    env = os.environ.get(CACHE_ENV_VAR)
    if env:
        return Path(env).expanduser()
    try:
        import platformdirs

        return Path(platformdirs.user_cache_dir("nextocc"))
    except ImportError:
        return Path.home() / ".cache" / "nextocc"
