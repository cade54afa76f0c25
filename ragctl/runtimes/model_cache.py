"""The on-disk cache of converted models (OpenVINO f32, and the int8 variant behind its gate).

    $RAGCTL_CACHE_DIR/openvino/<key>/    (default ~/.cache/ragctl/openvino/<key>/)

An entry is keyed by the model's digest, the OpenVINO version, the converter's version, the
variant and the window; it is built in a temp directory beside it under a file lock and
published by rename with `meta.json` written last, so readers never see half an entry and a
killed build leaves only a `.tmp-*` directory that the next build removes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragctl.fsutil import file_lock, publish

if TYPE_CHECKING:
    from ragctl.model_spec import ModelSpec

CONVERTER_VERSION = 1


def openvino_version() -> str:
    import openvino

    return str(openvino.__version__).split("-")[0]


def cache_root() -> Path:
    """`$RAGCTL_CACHE_DIR/openvino`, else `$XDG_CACHE_HOME/ragctl/openvino` (~/.cache)."""
    env = os.environ.get("RAGCTL_CACHE_DIR")
    if env:
        base = Path(env).expanduser()
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ragctl"
    return base / "openvino"


def cache_key(spec: ModelSpec, variant: str = "f32") -> str:
    import openvino

    raw = f"{spec.digest}\0{openvino.__version__}\0{CONVERTER_VERSION}\0{variant}\0{spec.max_tokens}"
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in spec.name)[:48]
    return f"{safe}-{variant}-{hashlib.sha256(raw.encode()).hexdigest()[:16]}"


def ensure_cached(spec: ModelSpec, variant: str, build: Callable[[Path], dict[str, Any]]) -> Path:
    """The cache entry for (spec, variant), built by `build(tmp_dir)` if missing.

    Built under `<root>/<key>.lock` in `<root>/.tmp-<key>-<pid>-<rand>/`, then renamed to
    `<root>/<key>/`. Leftover temp dirs of this key (a killed build) are removed first.
    """
    root = cache_root()
    key = cache_key(spec, variant)
    final = root / key
    if (final / "meta.json").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    with file_lock(root / key, timeout=3600):  # a conversion (int8: minutes) holds it
        if (final / "meta.json").is_file():
            return final
        for stale in root.glob(f".tmp-{key}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if final.exists():  # not ours (meta.json missing): move aside, never half-use it
            shutil.rmtree(final, ignore_errors=True)
        tmp = root / f".tmp-{key}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            meta = build(tmp)
            meta.update({"key": key, "variant": variant, "created": time.time()})
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
            publish(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final
