"""int8 post-training quantisation (placeholder; see ensure_int8)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ragctl.errors import ConfigError


def ensure_int8(spec: Any, f32_dir: Path) -> Path:
    raise ConfigError("--precision int8 refused: not implemented")
