"""Segment compaction outside the entity lock (store format 3, docs/storage.md "Compaction").

A merge is planned under the entity's lock, written without it and switched in under it again,
so writers and readers of the entity wait only for the plan and the switch, never for the
reading, k-means or HNSW building in between:

  plan    (lock held)  which segments become one (`plan_jobs`: segments holding orphans, kind
                       changes; `tier_job`: a full tier) and the ids to keep; the merge's
                       `.merge-<token>.lock` is created and flock'ed, naming its inputs
  write   (no lock)    read the inputs, drop ids not kept, write `.merge-<token>-<n>.seg`
                       (atomic_write: fsynced before it gets that name)
  switch  (lock held)  each job whose inputs are all still listed: its output is renamed to
                       its final name, the directory fsynced, then the caller writes
                       entity.json with the inputs replaced by the output (segments added
                       meanwhile stay) - the switch - and the inputs are deleted. A job whose
                       inputs went meanwhile (another process compacted them) is discarded.

The flock marks the merge as in progress: the kernel drops it when the owner dies, so
`live_merges` (called under the entity lock) tells a running merge, whose files are left
alone and whose inputs other writers do not plan again, from a killed one, whose leftovers
`SegmentedIndex.remove_unlisted` deletes. Keeping ids decided at plan time is safe: ids are
never reused (the plan raises `next_vector_id` to its watermark) and nothing makes an
unreferenced id referenced again (only a commit creates references, with fresh ids; changes
never touch `first_vector_id`/`chunk_count`); ids at or above the watermark (commits after the
plan) are always kept.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragctl.errors import StorageError
from ragctl.fsutil import fsync_dir, hold_marker, publish, release_marker
from ragctl.storage import segments as seg
from ragctl.storage.merge_marks import MERGE_PREFIX, live_merges, marker_path

if TYPE_CHECKING:
    import numpy as np



@dataclass
class Job:
    """Segments (`inputs`) that become one segment of `tier`."""

    inputs: list[str]
    tier: int
    written: bool = False  # False after write(): an input was gone (compacted meanwhile)
    output: Path | None = None  # the written output until it is renamed (None: nothing left)
    entry: dict[str, Any] | None = None  # the output's manifest entry
    dropped: int = 0  # ids of the inputs not kept


def plan_jobs(seg_dir: Path, segments: list[dict[str, Any]], kind: str, keep: np.ndarray | None,
              full: bool) -> list[Job]:
    """Rewrites of single segments that hold ids not in `keep` (when given) and, when `full`,
    of segments not of the kind they should be; then (full, approximate kind) the flat
    segments merged into one approximate segment once together they reach its size."""
    import numpy as np

    jobs: list[Job] = []
    if keep is not None:
        for s in segments:
            ids = seg.read_segment_ids(seg_dir / s["name"])
            if not np.isin(ids, keep, assume_unique=True).all():
                jobs.append(Job([s["name"]], int(s.get("tier", 0))))
    if not full:
        return jobs
    planned = {n for job in jobs for n in job.inputs}
    for s in segments:
        want = kind if int(s["count"]) >= seg.APPROX_SEGMENT_MIN else "flat"
        if s.get("kind", "flat") != want and s["name"] not in planned:
            jobs.append(Job([s["name"]], int(s.get("tier", 0))))
    if kind != "flat":
        # End of an ingest with an approximate kind: flat segments that together reach the
        # approximate size are merged into one approximate segment (bounded: the flat
        # segments are the lower tiers, at most ~FANOUT x 2 tiers of vectors).
        planned |= {n for job in jobs for n in job.inputs}
        small = [s for s in segments if s.get("kind", "flat") == "flat" and s["name"] not in planned]
        count = sum(int(s["count"]) for s in small)
        if len(small) > 1 and count >= seg.APPROX_SEGMENT_MIN:
            tier = max(seg.tier_for(count), max(int(s.get("tier", 0)) for s in small))
            jobs.append(Job([s["name"] for s in small], tier))
    return jobs


def tier_job(seg_dir: Path, segments: list[dict[str, Any]]) -> Job | None:
    """The lowest tier holding FANOUT segments that no merge in progress is reading, merged
    into one segment of the next tier."""

    def full_tier(exclude: set[str]) -> Job | None:
        tiers: dict[int, list[str]] = {}
        for s in segments:
            if s["name"] not in exclude:
                tiers.setdefault(int(s.get("tier", 0)), []).append(s["name"])
        tier = next((t for t in sorted(tiers) if len(tiers[t]) >= seg.FANOUT), None)
        return None if tier is None else Job(tiers[tier], tier + 1)

    if full_tier(set()) is None:  # the common case: no directory listing
        return None
    busy = {name for inputs in live_merges(seg_dir).values() for name in inputs}
    return full_tier(busy)


class Merge:
    """One round of compaction: its jobs have pairwise disjoint inputs and succeed or are
    discarded one by one. Create it under the entity lock; `close()` it in every case."""

    def __init__(self, seg_dir: Path, jobs: list[Job], kind: str, keep: np.ndarray | None = None,
                 keep_below: int = 0, stray_rows: np.ndarray | None = None) -> None:
        import uuid

        self.dir = Path(seg_dir)
        self.jobs = jobs
        self.kind = kind
        self.keep = keep  # sorted ids referenced at plan time (None: keep everything)...
        self.keep_below = keep_below  # ...deciding only for ids below the plan's watermark
        self.stray_rows = stray_rows  # chunk rows nothing referenced at plan time
        self.token = uuid.uuid4().hex[:16]
        self.lock_path = marker_path(self.dir, self.token)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = hold_marker(self.lock_path, json.dumps(sorted(n for job in jobs for n in job.inputs)).encode())

    def write(self) -> None:
        """Read the inputs and write each job's output (no lock held)."""
        import numpy as np

        for n, job in enumerate(self.jobs):
            try:
                parts = [seg.segment_vectors(self.dir / name) for name in job.inputs]
            except FileNotFoundError:
                continue  # compacted by another process meanwhile: discarded at the switch
            ids = np.concatenate([p[0] for p in parts]) if parts else np.empty(0, np.int64)
            vecs = np.vstack([p[1] for p in parts]) if parts else np.empty((0, 0), np.float32)
            if self.keep is not None and len(ids):
                mask = (ids >= self.keep_below) | np.isin(ids, self.keep)
                job.dropped = int(len(ids) - mask.sum())
                ids, vecs = ids[mask], vecs[mask]
            if len(ids):
                use = self.kind if len(ids) >= seg.APPROX_SEGMENT_MIN else "flat"
                out = self.dir / f"{MERGE_PREFIX}{self.token}-{n}.seg"
                try:
                    job.entry = seg.write_segment(out, ids, vecs, use, make_dirs=False)
                except StorageError as exc:
                    if isinstance(exc.__cause__, FileNotFoundError):
                        continue  # removed meanwhile (the entity deleted, or a writer that does not know merges in progress)
                    raise
                job.entry["tier"] = job.tier
                job.output = out
            job.written = True

    def switch(self, meta: dict[str, Any], write_meta: Callable[[dict[str, Any]], None],
               new_name: Callable[[int], str]) -> list[Job]:
        """Lock held, `meta` just read from entity.json: the jobs whose inputs are all still
        listed get their outputs renamed to final names (directory fsynced), entity.json is
        written naming them in place of their inputs - the switch; segments added meanwhile
        stay - and the inputs are deleted (readers that listed them retry). Returns those
        jobs; the others are discarded by `close()`."""
        manifest = meta.get("vectors") or {"segments": []}
        listed = {s["name"] for s in manifest["segments"]}
        applied = [job for job in self.jobs
                   if job.written and all(n in listed for n in job.inputs)
                   and (job.output is None or job.output.exists())]
        if not applied:
            return []
        segments = list(manifest["segments"])
        for job in applied:
            if job.output is not None and job.entry is not None:
                final = self.dir / new_name(int(job.entry["min_id"]))
                publish(job.output, final)
                job.entry["name"] = final.name
                job.output = None
            inputs = set(job.inputs)
            pos = min(i for i, s in enumerate(segments) if s["name"] in inputs)
            segments = [s for s in segments if s["name"] not in inputs]
            if job.entry is not None:
                segments.insert(pos, job.entry)
        fsync_dir(self.dir)
        meta["vectors"] = {**manifest, "segments": segments, "kind": self.kind}
        meta["next_vector_id"] = max(int(meta.get("next_vector_id", 0)), self.keep_below)
        write_meta(meta)  # the switch: the manifest (entity.json) names the live set
        for job in applied:
            for name in job.inputs:
                (self.dir / name).unlink(missing_ok=True)
        return applied

    def close(self) -> None:
        """Delete what is left of this merge (outputs not switched in, the lock file) and drop
        the flock. Safe without the entity lock: nobody else uses these files."""
        for job in self.jobs:
            if job.output is not None:
                job.output.unlink(missing_ok=True)
                job.output = None
        if self._fd is not None:
            release_marker(self.lock_path, self._fd)
            self._fd = None
