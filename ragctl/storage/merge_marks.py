"""Which segment merges are in progress: each running merge holds a flock'ed
`.merge-<token>.lock` marker naming its input segments (fsutil.hold_marker). Read by the
planner (compaction.py: inputs already being merged are not planned again) and by
`SegmentedIndex.remove_unlisted` (a live merge's files are left alone, a dead one's removed).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ragctl.fsutil import read_live_marker

MERGE_PREFIX = ".merge-"  # every file of a merge in progress: .merge-<token>.lock, .merge-<token>-<n>.seg
_TOKEN = re.compile(r"\.merge-([0-9a-f]{16})")  # also inside atomic_write's ..merge-<token>-<n>.seg.<x>.tmp


def marker_path(seg_dir: Path, token: str) -> Path:
    return Path(seg_dir) / f"{MERGE_PREFIX}{token}.lock"


def merge_token(name: str) -> str | None:
    """The token of a merge's file (lock, output, or atomic_write's temp of an output)."""
    m = _TOKEN.search(name)
    return m.group(1) if m else None


def live_merges(seg_dir: Path) -> dict[str, list[str]]:
    """token -> input segment names of every merge in progress in `seg_dir`: its marker is
    flock'ed by a live process. Call it under the entity lock (merges start under it)."""
    out: dict[str, list[str]] = {}
    if not Path(seg_dir).is_dir():
        return out
    for path in Path(seg_dir).glob(f"{MERGE_PREFIX}*.lock"):
        token = merge_token(path.name)
        if token is None:
            continue
        payload = read_live_marker(path)
        if payload is None:
            continue
        try:
            out[token] = list(json.loads(payload or b"[]"))
        except ValueError:
            out[token] = []
    return out
