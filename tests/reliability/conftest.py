"""Fixtures of the reliability tests (hostile inputs, injected faults, kill/resume, secrets, safe loading)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
