"""Segment compaction outside the entity lock (store format 3, docs/storage.md "Compaction").

A merge is planned under the entity's lock, written without it and switched in under it again,
so writers and readers of the entity wait only for the plan and the switch, never for the
reading, k-means or HNSW building in between:

  plan    (lock held)  which segments become one (`plan_jobs`: segments holding orphans, kind
                       changes, segments without a passage section; `tier_job`: a full tier)
                       and the ids to keep; the merge's
                       `.merge-<token>.lock` is created and flock'ed, naming its inputs
  write   (no lock)    read the inputs, drop ids not kept, write `.merge-<token>-<n>.seg`
                       (atomic_write: fsynced before it gets that name) with the inputs'
                       passage sections merged (an input without one: its rows' keys, read
                       from chunks.sqlite; a job only adding a section copies the payload)
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
    rekey: bool = False  # only to add a passage section: the payload is copied as it is


def plan_jobs(seg_dir: Path, segments: list[dict[str, Any]], kind: str, keep: np.ndarray | None,
              full: bool, rekey: bool = False) -> list[Job]:
    """Rewrites of single segments that hold ids not in `keep` (when given) and, when `full`,
    of segments not of the kind they should be; then (full, approximate kind) the flat
    segments merged into one approximate segment once together they reach its size; then
    (full, `rekey`) copies of the other segments without a passage section, with one."""
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
    if rekey:
        planned = {n for job in jobs for n in job.inputs}
        jobs.extend(Job([s["name"]], int(s.get("tier", 0)), rekey=True)
                    for s in segments if not s.get("passages") and s["name"] not in planned)
    return jobs


def keyed(manifest: dict[str, Any] | None) -> bool:
    """Every live segment of the manifest has a passage section (an entity with none: True)."""
    return manifest is not None and all(s.get("passages") for s in manifest.get("segments", []))


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
                 keep_below: int = 0, stray_rows: np.ndarray | None = None,
                 prefixes_of: Callable[[np.ndarray], np.ndarray | None] | None = None,
                 keyed: frozenset[str] = frozenset()) -> None:
        import uuid

        self.dir = Path(seg_dir)
        self.jobs = jobs
        self.kind = kind
        self.keep = keep  # sorted ids referenced at plan time (None: keep everything)...
        self.keep_below = keep_below  # ...deciding only for ids below the plan's watermark
        self.stray_rows = stray_rows  # chunk rows nothing referenced at plan time
        # the passage prefixes of ids (aligned; None when a row has no key) for inputs without a
        # passage section the manifest vouches for (`keyed`, at plan time)
        self.prefixes_of = prefixes_of
        self.keyed = keyed
        self.token = uuid.uuid4().hex[:16]
        self.lock_path = marker_path(self.dir, self.token)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = hold_marker(self.lock_path, json.dumps(sorted(n for job in jobs for n in job.inputs)).encode())

    def write(self) -> None:
        """Read the inputs and write each job's output (no lock held)."""
        import numpy as np

        for n, job in enumerate(self.jobs):
            out = self.dir / f"{MERGE_PREFIX}{self.token}-{n}.seg"
            try:
                if job.rekey:
                    self._rekey(job, out)
                    continue
                parts = [seg.segment_vectors(self.dir / name) for name in job.inputs]
                prefixes = self._input_prefixes(job.inputs, [p[0] for p in parts])
            except FileNotFoundError:
                continue  # compacted by another process meanwhile: discarded at the switch
            ids = np.concatenate([p[0] for p in parts]) if parts else np.empty(0, np.int64)
            vecs = np.vstack([p[1] for p in parts]) if parts else np.empty((0, 0), np.float32)
            if self.keep is not None and len(ids):
                mask = (ids >= self.keep_below) | np.isin(ids, self.keep)
                job.dropped = int(len(ids) - mask.sum())
                ids, vecs = ids[mask], vecs[mask]
                prefixes = None if prefixes is None else prefixes[mask]
            if len(ids):
                use = self.kind if len(ids) >= seg.APPROX_SEGMENT_MIN else "flat"
                try:
                    job.entry = seg.write_segment(out, ids, vecs, use, make_dirs=False, prefixes=prefixes)
                except StorageError as exc:
                    if isinstance(exc.__cause__, FileNotFoundError):
                        continue  # removed meanwhile (the entity deleted, or a writer that does not know merges in progress)
                    raise
                job.entry["tier"] = job.tier
                job.output = out
            job.written = True

    def _input_prefixes(self, inputs: list[str], ids: list[np.ndarray]) -> np.ndarray | None:
        """The passage prefixes of the inputs' vectors, aligned with their ids (each input's in
        id order): from their passage sections where the manifest vouches for them, else from
        their rows' keys; None if one is missing."""
        import numpy as np

        out = []
        for name, input_ids in zip(inputs, ids):
            section = seg.read_segment_passages(self.dir / name) if name in self.keyed else None
            if section is not None:
                prefixes, section_ids = section
                out.append(prefixes[np.argsort(section_ids, kind="stable")])  # section ids = input ids, permuted
                continue
            found = self.prefixes_of(input_ids) if self.prefixes_of is not None else None
            if found is None:
                return None
            out.append(found)
        return np.concatenate(out) if out else np.empty(0, np.uint64)

    def _rekey(self, job: Job, out: Path) -> None:
        """A segment without a passage section copied with one (its rows' keys); left as it is
        (the job discarded) where a row has no key."""
        source = self.dir / job.inputs[0]
        prefixes = self.prefixes_of(seg.read_segment_ids(source)) if self.prefixes_of is not None else None
        if prefixes is None:
            return
        try:
            job.entry = seg.copy_with_passages(source, out, prefixes)
        except StorageError as exc:
            if isinstance(exc.__cause__, FileNotFoundError):
                return  # removed meanwhile (as in write)
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
