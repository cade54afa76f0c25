#!/usr/bin/env python3
"""Load benchmark of `ragctl serve` (issue 22 item 2; results in docs/api.md "Load benchmark").

    .venv/bin/python scripts/bench_serve.py [--files 64] [--entities 16] [--upload-clients 64]
        [--search-clients 8] [--size-mb 1,3] [--text-kb 4,16] [--formats pdf,docx,html,md]
        [--workers 0] [--precision auto] [--kill-after-files 8] [--no-kill] [--keep DIR] [--json]

1. Documents: `--files` real PDF / DOCX / HTML / Markdown files spread over `--entities`
   entities (each entity gets every format in turn), each `--size-mb MIN,MAX` MB (log-uniform)
   and each carrying `--text-kb MIN,MAX` KB of generated office prose (ragctl.bench.corpus.Prose)
   plus one unique marker sentence. The rest of each file is image payload, as in real office
   files: uncompressed RGB images in the PDF, PNG pictures in the DOCX, base64 `data:` images
   in the HTML and Markdown. The issue asks for 1-30 MB of text-heavy documents; on a 2-core
   machine embedding 10-40 chunks/s that is hours, so the text per file is a flag.
2. Load: a `ragctl serve` subprocess on 127.0.0.1 (model loaded before the clock starts).
   `--upload-clients` threads upload the files at once (one file per request, streamed,
   202 expected) while `--search-clients` threads search the entities (`--search-mode`, default hybrid; a think
   time of `--search-think-s` between queries). Measured: server peak RSS (sum over the
   server's process tree, sampled every 100 ms), uploads/s and chunks/s (first byte sent to
   last job done), search p50/p95 of the answered queries (404 before an entity's first
   commit is counted apart), every error.
3. Exactly once: every job `done` with every file `indexed`; each entity's file listing holds
   each path exactly once with the job's doc_id; `/api/entities` (= `ragctl stats`) counts the
   files and the jobs' chunks; a text-mode search for each file's marker finds exactly one
   document, the right one; after the server stops, `ragctl verify` is clean.
4. `ragctl ingest` of the same files into a fresh store, right after: files/s and chunks/s
   (its own `seconds`, model load included, and the subprocess' wall time).
5. kill -9: a fresh store and server; half the files are uploaded at once; when the engine has
   finished `--kill-after-files` files the other half starts (throttled to `--slow-mbps` so some
   bodies are mid-stream), and once half of those are acknowledged the server's main process
   gets SIGKILL. Restart on the same store, wait for every acknowledged job, re-upload what was
   not acknowledged (as a client would), then the same exactly-once checks: nothing
   acknowledged is lost, nothing is indexed twice.

Exit status 0 when every check passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import math
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

RAGCTL = [sys.executable, "-m", "ragctl"]
QUERIES = ["refund policy for customers", "how are invoices approved", "security incident response",
           "quarterly revenue targets", "onboarding checklist for new staff", "parental leave policy",
           "who owns the vendor contract", "disaster recovery test results"]
MB = 1024 * 1024
MIME = {"pdf": "application/pdf", "html": "text/html", "md": "text/markdown",
        "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document"}


# --------------------------------------------------------------------------- documents

@dataclass
class Doc:
    entity: str
    path: str  # inside the entity
    file: Path
    fmt: str
    bytes: int
    text_bytes: int
    marker: str  # a unique token, inside the file's one marker sentence


def _png(rng: random.Random, nbytes: int) -> bytes:
    """A valid PNG of random RGB pixels (incompressible) of about `nbytes`."""
    width = 512
    height = max(1, nbytes // (width * 3))
    raw = b"".join(b"\x00" + rng.randbytes(width * 3) for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 1)) + chunk(b"IEND", b"")


def _pieces(total: int, piece: int) -> list[int]:
    return [min(piece, total - i) for i in range(0, max(total, 0), piece)] if total > 0 else []


def _pdf_text(text: str) -> bytes:
    raw = text.encode("cp1252", "replace")
    return raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")


def _make_pdf(title: str, items: list[tuple[str, str]], image_bytes: int, rng: random.Random) -> bytes:
    """Text pages (Helvetica, a real text layer) followed by pages each showing one image."""
    lines: list[tuple[int, bytes, str]] = [(15, b"/F2", line) for line in textwrap.wrap(title, 62)]
    for kind, text in items:
        size, font, width = (13, b"/F2", 70) if kind == "heading" else (11, b"/F1", 92)
        lines += [(size, font, line) for line in textwrap.wrap(text, width)] + [(0, b"", "")]
    objects: list[bytes] = [b"", b""]  # catalog, pages
    objects += [b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
                b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding >>"]
    kids: list[int] = []

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    def page(stream: bytes, resources: bytes) -> None:
        content = add(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
        kids.append(add(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources %s /Contents %d 0 R >>"
                        % (resources, content)))

    fonts = b"<< /Font << /F1 3 0 R /F2 4 0 R >> >>"
    ops, y = [b"BT"], 740
    for size, font, line in lines:
        if y < 50:
            page(b"\n".join([*ops, b"ET"]), fonts)
            ops, y = [b"BT"], 740
        if size:
            ops.append(b"%s %d Tf 1 0 0 1 72 %d Tm (%s) Tj" % (font, size, y, _pdf_text(line)))
            y -= size + 4
        else:
            y -= 8
    page(b"\n".join([*ops, b"ET"]), fonts)
    for n, size in enumerate(_pieces(image_bytes, 3 * MB)):
        width = 1024
        height = max(1, size // (width * 3))
        pixels = rng.randbytes(width * height * 3)
        image = add(b"<< /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace /DeviceRGB "
                    b"/BitsPerComponent 8 /Length %d >>\nstream\n" % (width, height, len(pixels))
                    + pixels + b"\nendstream")
        page(b"q 468 0 0 %d 72 100 cm /Im%d Do Q" % (max(1, 468 * height // width), n),
             b"<< /XObject << /Im%d %d 0 R >> >>" % (n, image))
    objects[0] = b"<< /Type /Catalog /Pages 2 0 R >>"
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (b" ".join(b"%d 0 R" % k for k in kids), len(kids))
    from ragctl.bench.samples import serialize_pdf

    return serialize_pdf(objects, b"/Root 1 0 R")


def _make_docx(title: str, items: list[tuple[str, str]], image_bytes: int, rng: random.Random) -> bytes:
    import docx
    from docx.shared import Inches

    doc = docx.Document()
    doc.add_heading(title, level=0)
    images = _pieces(image_bytes, 2 * MB)
    every = max(1, len(items) // (len(images) + 1))
    for i, (kind, text) in enumerate(items):
        if kind == "heading":
            doc.add_heading(text, level=1)
        else:
            doc.add_paragraph(text)
        if images and i % every == every - 1:
            doc.add_picture(io.BytesIO(_png(rng, images.pop())), width=Inches(6))
    for size in images:
        doc.add_picture(io.BytesIO(_png(rng, size)), width=Inches(6))
    buf = io.BytesIO()
    doc.save(buf)
    return buf.getvalue()


def _data_uri(rng: random.Random, size: int) -> str:
    return "data:image/png;base64," + base64.b64encode(_png(rng, size * 3 // 4)).decode()


def _make_html(title: str, items: list[tuple[str, str]], image_bytes: int, rng: random.Random) -> bytes:
    from html import escape

    out = ["<!DOCTYPE html>", f'<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title></head>',
           f"<body><main><h1>{escape(title)}</h1>"]
    images = _pieces(image_bytes, 2 * MB)
    every = max(1, len(items) // (len(images) + 1))
    for i, (kind, text) in enumerate(items):
        out.append(f"<h2>{escape(text)}</h2>" if kind == "heading" else f"<p>{escape(text)}</p>")
        if images and i % every == every - 1:
            out.append(f'<figure><img alt="Figure {i}" src="{_data_uri(rng, images.pop())}"></figure>')
    out += [f'<figure><img alt="Appendix figure" src="{_data_uri(rng, s)}"></figure>' for s in images]
    out.append("</main></body></html>")
    return "\n".join(out).encode()


def _make_md(title: str, items: list[tuple[str, str]], image_bytes: int, rng: random.Random) -> bytes:
    out = [f"# {title}", ""]
    images = _pieces(image_bytes, 2 * MB)
    every = max(1, len(items) // (len(images) + 1))
    for i, (kind, text) in enumerate(items):
        out += [f"## {text}", ""] if kind == "heading" else [text, ""]
        if images and i % every == every - 1:
            out += [f"![Figure {i}]({_data_uri(rng, images.pop())})", ""]
    out += [f"![Appendix figure]({_data_uri(rng, s)})" for s in images]
    return "\n".join(out).encode()


WRITERS = {"pdf": _make_pdf, "docx": _make_docx, "html": _make_html, "md": _make_md}


def log_uniform(rng: random.Random, low: float, high: float) -> float:
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def generate(root: Path, files: int, entities: int, formats: list[str], size_mb: tuple[float, float],
             text_kb: tuple[float, float], seed: int) -> list[Doc]:
    from ragctl.bench.corpus import Prose

    rng = random.Random(seed)
    docs = []
    for i in range(files):
        entity = f"tenant-{i % entities:02d}"
        fmt = formats[(i // entities) % len(formats)]
        target = int(log_uniform(rng, *size_mb) * MB)
        prose = Prose(random.Random(rng.getrandbits(64)))
        title, items = prose.document(int(log_uniform(rng, *text_kb) * 1024), "Acme Corp")
        items = [(k if k == "heading" else "text", t) for k, t in items]
        marker = f"mk{seed}x{i:04d}{rng.getrandbits(40):010x}"
        sentence = f"Verification marker {marker} appears in exactly one uploaded document of this benchmark."
        items.insert(len(items) // 2, ("text", sentence))
        text_bytes = len(title) + sum(len(t) for _, t in items)
        writer = WRITERS[fmt]
        probe = len(writer(title, items, 0, random.Random(0)))  # the file without payload
        data = writer(title, items, max(0, target - probe), random.Random(rng.getrandbits(64)))
        path = f"docs/{fmt}/doc-{i:03d}.{fmt}"
        file = root / entity / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(data)
        docs.append(Doc(entity, path, file, fmt, len(data), text_bytes, marker))
    return docs


# --------------------------------------------------------------------------- server

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, store: Path, log: Path, args: argparse.Namespace) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log.open("ab")
        t0 = time.perf_counter()
        cmd = [*RAGCTL, "serve", "--store", str(store), "--port", str(self.port), "--workers", str(args.workers),
               "--precision", args.precision, "--log-level", "warning"]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log)
        self.ps = psutil.Process(self.proc.pid)
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited during start-up (log: {log})")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).json().get("engine") == "running":
                    break
            except (httpx.TransportError, ValueError):
                pass
            time.sleep(0.2)
        self.start_s = time.perf_counter() - t0

    def tree_rss(self) -> tuple[int, int]:
        """(RSS of the main process, RSS summed over it and its children)."""
        try:
            main = self.ps.memory_info().rss
            children = self.ps.children(recursive=True)
        except psutil.Error:
            return 0, 0
        total = main
        for child in children:
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
        return main, total

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self.log.close()

    def kill9(self) -> list[int]:
        """SIGKILL the main process only (as `kill -9 PID`); returns the children it left."""
        children = self.ps.children(recursive=True)
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        self.log.close()
        time.sleep(2.0)
        survivors = [c.pid for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
        for pid in survivors:  # ours to clean up: children of the server we started
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return survivors


class RssSampler(threading.Thread):
    def __init__(self, server: Server) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.stop_event = threading.Event()
        self.baseline = server.tree_rss()
        self.peak_main, self.peak_tree = self.baseline

    def run(self) -> None:
        while not self.stop_event.is_set():
            main, tree = self.server.tree_rss()
            self.peak_main, self.peak_tree = max(self.peak_main, main), max(self.peak_tree, tree)
            time.sleep(0.1)


# --------------------------------------------------------------------------- clients

def multipart(doc: Doc, boundary: str, mbps: float) -> Iterator[bytes]:
    """The upload body, streamed from disk (throttled to `mbps` MB/s when > 0)."""
    yield (f'--{boundary}\r\nContent-Disposition: form-data; name="path"\r\n\r\n{doc.path}\r\n'
           f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{doc.file.name}"\r\n'
           f"Content-Type: {MIME[doc.fmt]}\r\n\r\n").encode()
    piece = 256 * 1024
    with doc.file.open("rb") as f:
        while block := f.read(piece):
            yield block
            if mbps > 0:
                time.sleep(len(block) / (mbps * MB))
    yield f"\r\n--{boundary}--\r\n".encode()


@dataclass
class Upload:
    doc: Doc
    status: int | None = None  # HTTP status; None: no answer (transport error)
    job_id: str | None = None
    error: str | None = None
    sent_at: float = 0.0
    acked_at: float = 0.0


def upload(url: str, doc: Doc, mbps: float = 0.0) -> Upload:
    result = Upload(doc, sent_at=time.perf_counter())
    boundary = f"bench-{doc.marker}"
    try:
        with httpx.Client(base_url=url, timeout=600) as c:
            r = c.post(f"/api/entities/{doc.entity}/files", content=multipart(doc, boundary, mbps),
                       headers={"content-type": f"multipart/form-data; boundary={boundary}"})
        result.status = r.status_code
        if r.status_code == 202:
            result.job_id = str(r.json()["job_id"])
        else:
            result.error = r.text[:300]
    except httpx.HTTPError as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    result.acked_at = time.perf_counter()
    return result


def wait_jobs(url: str, job_ids: list[str], timeout: float, errors: list[str]) -> dict[str, dict[str, Any]]:
    """Poll until every job is finished; a request that fails is an error (recorded) and retried."""
    finished: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=url, timeout=60) as c:
        while len(finished) < len(job_ids) and time.monotonic() < deadline:
            for job_id in job_ids:
                if job_id in finished:
                    continue
                try:
                    body = c.get(f"/api/jobs/{job_id}").json()
                except httpx.HTTPError as exc:
                    errors.append(f"GET /api/jobs/{job_id}: {type(exc).__name__}: {exc}")
                    break
                if body.get("status") in ("done", "failed", "cancelled"):
                    finished[job_id] = body
            time.sleep(0.25)
    return finished


class Searchers:
    """N closed-loop search clients with a think time between queries."""

    def __init__(self, url: str, entities: list[str], clients: int, think_s: float, seed: int, mode: str) -> None:
        self.url, self.entities, self.think_s, self.mode = url, entities, think_s, mode
        self.stop_event = threading.Event()
        self.latencies: list[float] = []
        self.slowest: list[tuple[float, float]] = []  # (latency s, seconds after start), top 5
        self.started = time.perf_counter()
        self.not_yet = 0  # 404 unknown_entity: the entity has no commit yet
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(seed + i,), daemon=True) for i in range(clients)]

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=self.url, timeout=120) as c:
            while not self.stop_event.is_set():
                entity = rng.choice(self.entities)
                t0 = time.perf_counter()
                try:
                    r = c.post(f"/api/entities/{entity}/search", json={"query": rng.choice(QUERIES), "k": 5, "mode": self.mode})
                    elapsed = time.perf_counter() - t0
                    with self.lock:
                        if r.status_code == 200:
                            self.latencies.append(elapsed)
                            self.slowest = sorted([*self.slowest, (elapsed, t0 - self.started)], reverse=True)[:5]
                        elif r.status_code == 404 and "unknown_entity" in r.text:
                            self.not_yet += 1
                        else:
                            self.errors.append(f"search {entity}: {r.status_code} {r.text[:200]}")
                except httpx.HTTPError as exc:
                    with self.lock:
                        self.errors.append(f"search {entity}: {type(exc).__name__}: {exc}")
                self.stop_event.wait(self.think_s)

    def start(self) -> None:
        self.started = time.perf_counter()
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(180)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


# --------------------------------------------------------------------------- checks

def check_exactly_once(url: str, docs: list[Doc], doc_ids: dict[str, str], job_chunks: int | None) -> dict[str, Any]:
    """Listing, stats and a text search for every marker. `doc_ids`: marker -> doc_id the job reported."""
    problems: list[str] = []
    by_entity: dict[str, list[Doc]] = {}
    for d in docs:
        by_entity.setdefault(d.entity, []).append(d)
    found = 0
    with httpx.Client(base_url=url, timeout=120) as c:
        stats = c.get("/api/entities", params={"limit": 1000}).json()  # paged: read every page
        while len(stats["entities"]) < stats.get("total", 0):
            page = c.get("/api/entities", params={"limit": 1000, "offset": len(stats["entities"])}).json()
            if not page["entities"]:
                break
            stats["entities"].update(page["entities"])
        listed_chunks = 0
        for entity, edocs in sorted(by_entity.items()):
            listing = c.get(f"/api/entities/{entity}/files", params={"limit": 1000}).json()
            paths = [f["path"] for f in listing.get("files", [])]
            listed_chunks += sum(int(f["chunks"]) for f in listing.get("files", []))
            if sorted(paths) != sorted(d.path for d in edocs):
                problems.append(f"{entity}: listed {sorted(paths)} != uploaded {sorted(d.path for d in edocs)}")
            by_path = {f["path"]: f["doc_id"] for f in listing.get("files", [])}
            documents = stats.get("entities", {}).get(entity, {}).get("documents")
            if documents != len(edocs):
                problems.append(f"{entity}: stats documents {documents} != {len(edocs)}")
            for d in edocs:
                r = c.post(f"/api/entities/{entity}/search", json={"query": d.marker, "k": 10, "mode": "text"})
                hits = r.json().get("results", []) if r.status_code == 200 else []
                holders = {(h["doc_id"], h["path"]) for h in hits if d.marker in h["text"]}
                expected = doc_ids.get(d.marker)
                if holders == {(expected, d.path)} and by_path.get(d.path) == expected:
                    found += 1
                else:
                    problems.append(f"{entity}/{d.path}: marker found in {sorted(holders)}, job said {expected}, "
                                    f"listing says {by_path.get(d.path)}")
    totals = stats.get("totals", {})
    if totals.get("documents") != len(docs):
        problems.append(f"stats totals documents {totals.get('documents')} != {len(docs)}")
    if job_chunks is not None and totals.get("chunks") != job_chunks:
        problems.append(f"stats totals chunks {totals.get('chunks')} != chunks the jobs reported {job_chunks}")
    if totals.get("chunks") != listed_chunks:
        problems.append(f"stats chunks {totals.get('chunks')} != listed chunks {listed_chunks}")
    return {"documents": totals.get("documents"), "chunks": totals.get("chunks"), "markers_found_once": found,
            "problems": problems}


def verify(store: Path) -> dict[str, Any]:
    r = subprocess.run([*RAGCTL, "verify", "--store", str(store), "--json"], capture_output=True, text=True)
    report = json.loads(r.stdout) if r.stdout.strip() else {}
    bad = {e: v["problems"] for e, v in report.get("entities", {}).items() if not v.get("ok")}
    return {"exit": r.returncode, "ok": bool(report.get("ok")) and r.returncode == 0, "problems": bad}


def staging_leftovers(store: Path) -> list[str]:
    """Job directories that still hold staged files, or have no manifest (a cut-off upload)."""
    jobs = store / ".serve" / "jobs"
    if not jobs.is_dir():
        return []
    return sorted(d.name for d in jobs.iterdir()
                  if d.is_dir() and (not (d / "job.json").exists() or any((d / "files").glob("*"))))


def server_log_errors(log: Path) -> list[str]:
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    return [line for line in lines if "Traceback" in line or " ERROR" in line or "error" in line.lower()][:20]


# --------------------------------------------------------------------------- phases

def phase_load(docs: list[Doc], store: Path, log: Path, args: argparse.Namespace) -> dict[str, Any]:
    server = Server(store, log, args)
    sampler = RssSampler(server)
    sampler.start()
    entities = sorted({d.entity for d in docs})
    searchers = Searchers(server.url, entities, args.search_clients, args.search_think_s, args.seed,
                          args.search_mode)
    load_before = os.getloadavg()
    try:
        searchers.start()
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.upload_clients) as pool:
            uploads = list(pool.map(lambda d: upload(server.url, d), docs))
        acked_s = time.perf_counter() - t0
        acked = [u for u in uploads if u.status == 202 and u.job_id]
        errors: list[str] = []
        jobs = wait_jobs(server.url, [u.job_id for u in acked if u.job_id], args.job_timeout, errors)
        seconds = time.perf_counter() - t0
        searchers.stop()
        load_after = os.getloadavg()
        with httpx.Client(base_url=server.url, timeout=60) as c:
            status = c.get("/api/status").json()
        errors += [f"upload {u.doc.entity}/{u.doc.path}: {u.status} {u.error}" for u in uploads if u.status != 202]
        errors += [f"job {j}: not finished after {args.job_timeout}s" for j in
                   {u.job_id for u in acked} - set(jobs)]
        doc_ids: dict[str, str] = {}
        chunks = 0
        for u in acked:
            for f in jobs.get(u.job_id or "", {}).get("files", []):
                if f["status"] != "indexed" or not f["doc_id"]:
                    errors.append(f"{u.doc.entity}/{f['path']}: {f['status']} {f['error']}")
                doc_ids[u.doc.marker] = f["doc_id"]
                chunks += int(f["chunks"] or 0)
        errors += searchers.errors
        idle: list[float] = []  # the same queries one at a time once the load is over
        with httpx.Client(base_url=server.url, timeout=60) as c:
            for n in range(24):
                t = time.perf_counter()
                r = c.post(f"/api/entities/{entities[n % len(entities)]}/search",
                           json={"query": QUERIES[n % len(QUERIES)], "k": 5, "mode": args.search_mode})
                if r.status_code == 200:
                    idle.append(time.perf_counter() - t)
        once = check_exactly_once(server.url, docs, doc_ids, chunks)
    finally:
        sampler.stop_event.set()
        searchers.stop()
        server.stop()
    errors += [f"exactly-once: {p}" for p in once["problems"]]
    checked = verify(store)
    if not checked["ok"]:
        errors.append(f"verify: {checked}")
    return {
        "server_start_s": server.start_s, "seconds": seconds, "acked_seconds": acked_s,
        "uploads": len(uploads), "accepted": len(acked), "files_indexed": len(doc_ids), "chunks": chunks,
        "uploads_per_s": len(acked) / seconds, "chunks_per_s": chunks / seconds,
        "mb_per_s": sum(d.bytes for d in docs) / MB / seconds,
        "rss_baseline_mb": sampler.baseline[1] / MB, "rss_peak_tree_mb": sampler.peak_tree / MB,
        "rss_peak_main_mb": sampler.peak_main / MB,
        "searches": len(searchers.latencies), "searches_before_first_commit": searchers.not_yet,
        "search_p50_ms": 1000 * percentile(searchers.latencies, 0.5),
        "search_p95_ms": 1000 * percentile(searchers.latencies, 0.95),
        "search_max_ms": 1000 * max(searchers.latencies, default=float("nan")),
        # where the tail is: [ms, seconds after the search clients started], slowest first
        "search_slowest": [[round(1000 * ms, 1), round(at, 2)] for ms, at in searchers.slowest],
        "search_idle_p50_ms": 1000 * percentile(idle, 0.5), "search_mode": args.search_mode,
        "engine": {k: status["engine"].get(k) for k in ("encode_calls", "chunks_embedded", "files_done", "model")},
        "exactly_once": {k: v for k, v in once.items() if k != "problems"}, "verify_ok": checked["ok"],
        "loadavg_before": load_before, "loadavg_after": load_after,
        "errors": errors, "server_log_errors": server_log_errors(log),
    }


def phase_ingest(corpus: Path, store: Path, args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    r = subprocess.run([*RAGCTL, "ingest", str(corpus), "--store", str(store), "--workers", str(args.workers),
                        "--precision", args.precision, "--json", "-q"], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    report = json.loads(r.stdout)
    files = sum(e["indexed"] for e in report["entities"].values())
    chunks = sum(e["chunks"] for e in report["entities"].values())
    seconds = float(report["seconds"])
    # the fixed cost (process start, model load, one tiny file): serve's clock starts after it
    tiny = store.parent / "ingest-tiny"
    (tiny / "one").mkdir(parents=True, exist_ok=True)
    (tiny / "one" / "note.md").write_text("# Note\n\nOne short paragraph to index.\n")
    r0 = subprocess.run([*RAGCTL, "ingest", str(tiny), "--store", str(store.parent / "store-tiny"), "--workers",
                         str(args.workers), "--precision", args.precision, "--json", "-q"], capture_output=True, text=True)
    fixed = float(json.loads(r0.stdout)["seconds"]) if r0.returncode == 0 else 0.0
    net = max(seconds - fixed, 1e-9)
    return {"exit": r.returncode, "seconds": seconds, "wall_s": wall, "files": files, "chunks": chunks,
            "files_per_s": files / seconds, "chunks_per_s": chunks / seconds, "fixed_cost_s": fixed,
            "files_per_s_net": files / net, "chunks_per_s_net": chunks / net,
            "failures": report.get("failures", []), "model": report.get("model", {}).get("backend"),
            "precision": report.get("model", {}).get("precision")}


def phase_kill(docs: list[Doc], store: Path, log: Path, args: argparse.Namespace) -> dict[str, Any]:
    server = Server(store, log, args)
    first, second = docs[: len(docs) // 2], docs[len(docs) // 2:]
    results: list[Upload] = []
    lock = threading.Lock()

    def send(doc: Doc, mbps: float) -> None:
        u = upload(server.url, doc, mbps)
        with lock:
            results.append(u)

    pool = ThreadPoolExecutor(max_workers=args.upload_clients)
    for d in first:
        pool.submit(send, d, 0.0)
    at_kill: dict[str, Any] = {}
    deadline = time.monotonic() + args.job_timeout
    with httpx.Client(base_url=server.url, timeout=30) as c:
        while time.monotonic() < deadline:
            engine = c.get("/api/status").json()["engine"]
            if engine["files_done"] >= min(args.kill_after_files, len(first)):
                break
            time.sleep(0.2)
        for d in second:
            pool.submit(send, d, args.slow_mbps)
        while time.monotonic() < deadline:
            with lock:
                acked_second = sum(1 for u in results if u.doc in second and u.status == 202)
            if acked_second >= len(second) // 2:
                break
            time.sleep(0.05)
        engine = c.get("/api/status").json()["engine"]
    at_kill = {"files_done": engine["files_done"], "jobs_done": engine["jobs_done"],
               "jobs_active": engine["jobs_active"], "jobs_queued": engine["jobs_queued"]}
    survivors = server.kill9()
    pool.shutdown(wait=True)
    with lock:
        acked = [u for u in results if u.status == 202 and u.job_id]
        at_kill["acknowledged"] = len(acked)
        at_kill["cut_off"] = sum(1 for u in results if u.status is None)
        at_kill["other_status"] = sorted({u.status for u in results if u.status not in (None, 202)})
    errors: list[str] = [f"upload answered {u.status}: {u.error}" for u in results if u.status not in (None, 202)]
    if survivors:
        errors.append(f"processes left running by the killed server: {survivors}")
    restarted = Server(store, log, args)
    try:
        t0 = time.perf_counter()
        jobs = wait_jobs(restarted.url, [u.job_id for u in acked if u.job_id], args.job_timeout, errors)
        resume_s = time.perf_counter() - t0
        doc_ids: dict[str, str] = {}
        statuses: dict[str, int] = {}
        for u in acked:
            job = jobs.get(u.job_id or "")
            if job is None or job["status"] != "done":
                errors.append(f"acknowledged job {u.job_id} ({u.doc.entity}/{u.doc.path}) lost: {job}")
                continue
            for f in job["files"]:
                statuses[f["status"]] = statuses.get(f["status"], 0) + 1
                if f["status"] not in ("indexed", "unchanged") or not f["doc_id"]:
                    errors.append(f"acknowledged {u.doc.entity}/{f['path']}: {f['status']} {f['error']}")
                doc_ids[u.doc.marker] = f["doc_id"]
        acked_markers = {u.doc.marker for u in acked}
        retry = [d for d in docs if d.marker not in acked_markers]
        with ThreadPoolExecutor(max_workers=args.upload_clients) as p:
            retried = list(p.map(lambda d: upload(restarted.url, d), retry))
        retry_jobs = wait_jobs(restarted.url, [u.job_id for u in retried if u.job_id], args.job_timeout, errors)
        retry_statuses: dict[str, int] = {}
        for u in retried:
            if u.status != 202:
                errors.append(f"re-upload {u.doc.entity}/{u.doc.path}: {u.status} {u.error}")
            for f in retry_jobs.get(u.job_id or "", {}).get("files", []):
                retry_statuses[f["status"]] = retry_statuses.get(f["status"], 0) + 1
                if f["status"] not in ("indexed", "unchanged") or not f["doc_id"]:
                    errors.append(f"re-upload {u.doc.entity}/{f['path']}: {f['status']} {f['error']}")
                doc_ids[u.doc.marker] = f["doc_id"]
        once = check_exactly_once(restarted.url, docs, doc_ids, None)
    finally:
        restarted.stop()
    errors += [f"exactly-once: {p}" for p in once["problems"]]
    checked = verify(store)
    if not checked["ok"]:
        errors.append(f"verify: {checked}")
    leftovers = staging_leftovers(store)
    if leftovers:
        errors.append(f"staging left behind after every job finished: {leftovers[:5]}")
    return {"at_kill": at_kill, "staging_leftovers": len(leftovers), "restart_s": restarted.start_s, "resume_s": resume_s,
            "acknowledged_statuses": statuses, "retried": len(retry), "retry_statuses": retry_statuses,
            "exactly_once": {k: v for k, v in once.items() if k != "problems"}, "verify_ok": checked["ok"],
            "errors": errors, "server_log_errors": server_log_errors(log)}


# --------------------------------------------------------------------------- main

def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def pair(text: str) -> tuple[float, float]:
    low, _, high = text.partition(",")
    a, b = float(low), float(high or low)
    if not 0 < a <= b:
        raise argparse.ArgumentTypeError(f"{text!r}: expected MIN,MAX with 0 < MIN <= MAX")
    return a, b


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--files", type=int, default=64, help="uploads (one file each)")
    ap.add_argument("--entities", type=int, default=16)
    ap.add_argument("--upload-clients", type=int, default=64, help="concurrent upload threads")
    ap.add_argument("--search-clients", type=int, default=8)
    ap.add_argument("--search-think-s", type=float, default=0.25, help="pause of each search client between queries")
    ap.add_argument("--search-mode", default="hybrid", choices=["hybrid", "vector", "text"])
    ap.add_argument("--size-mb", type=pair, default=(1.0, 3.0), help="file size MIN,MAX in MB (log-uniform)")
    ap.add_argument("--text-kb", type=pair, default=(4.0, 16.0), help="prose per file MIN,MAX in KB (log-uniform)")
    ap.add_argument("--formats", default="pdf,docx,html,md")
    ap.add_argument("--workers", type=int, default=0, help="parse workers of serve and ingest (0: cores)")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--kill-after-files", type=int, default=8, help="kill phase: files the engine finishes first")
    ap.add_argument("--slow-mbps", type=float, default=2.0, help="kill phase: upload speed of the second half")
    ap.add_argument("--no-kill", action="store_true", help="skip the kill -9 phase")
    ap.add_argument("--job-timeout", type=float, default=3600.0)
    ap.add_argument("--seed", type=int, default=22)
    ap.add_argument("--keep", type=Path, default=None, help="work in DIR and keep it (default: a temp dir)")
    ap.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = ap.parse_args()
    formats = [f.strip().lstrip(".") for f in args.formats.split(",") if f.strip()]
    if unknown := [f for f in formats if f not in WRITERS]:
        ap.error(f"--formats: unknown {unknown} (one of {', '.join(WRITERS)})")

    tmp = None if args.keep else tempfile.TemporaryDirectory(prefix="bench-serve-")
    root = args.keep or Path(tmp.name)  # type: ignore[union-attr]
    root.mkdir(parents=True, exist_ok=True)
    try:
        say(f"generating {args.files} documents under {root / 'corpus'} ...")
        t0 = time.perf_counter()
        docs = generate(root / "corpus", args.files, args.entities, formats, args.size_mb, args.text_kb, args.seed)
        corpus = {"files": len(docs), "entities": len({d.entity for d in docs}),
                  "bytes": sum(d.bytes for d in docs), "text_bytes": sum(d.text_bytes for d in docs),
                  "formats": {f: sum(1 for d in docs if d.fmt == f) for f in formats},
                  "min_mb": min(d.bytes for d in docs) / MB, "max_mb": max(d.bytes for d in docs) / MB,
                  "generate_s": time.perf_counter() - t0}
        say(f"load phase: serve, {args.upload_clients} upload clients, {args.search_clients} search clients ...")
        load = phase_load(docs, root / "store-serve", root / "serve.log", args)
        say("ingest phase: ragctl ingest of the same files ...")
        ingest = phase_ingest(root / "corpus", root / "store-ingest", args)
        kill = None
        if not args.no_kill:
            say("kill phase: kill -9 mid-load, restart ...")
            kill = phase_kill(docs, root / "store-kill", root / "serve-kill.log", args)
    finally:
        if tmp is not None:
            tmp.cleanup()
    if ingest["chunks"] != load["chunks"]:
        load["errors"].append(f"serve embedded {load['chunks']} chunks, ingest {ingest['chunks']} of the same files")
    if ingest["exit"] != 0 or ingest["failures"]:
        load["errors"].append(f"ingest exit {ingest['exit']}: {ingest['failures'][:3]}")
    result = {
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "machine": {"cpus": os.cpu_count(), "loadavg_at_start": load["loadavg_before"],
                    "cpu_model": _cpu_model()},
        "args": {k: (list(v) if isinstance(v, tuple) else str(v) if isinstance(v, Path) else v)
                 for k, v in vars(args).items()},
        "corpus": corpus, "serve": load, "ingest": ingest, "kill": kill,
        "ratio_uploads_per_s": load["uploads_per_s"] / ingest["files_per_s"],
        "ratio_chunks_per_s": load["chunks_per_s"] / ingest["chunks_per_s"],
        "ratio_chunks_per_s_net": load["chunks_per_s"] / ingest["chunks_per_s_net"],
        "ok": not load["errors"] and (kill is None or not kill["errors"]),
    }
    if args.json:
        print(json.dumps(json_safe(result), indent=2, default=str))
    else:
        print(render(result))
    return 0 if result["ok"] else 1


def json_safe(value: Any) -> Any:
    """NaN (a percentile of no queries) becomes null: strict JSON has no NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def render(r: dict[str, Any]) -> str:
    c, s, i, k = r["corpus"], r["serve"], r["ingest"], r["kill"]
    rows = [
        ("corpus", f"{c['files']} files ({', '.join(f'{n} {f}' for f, n in c['formats'].items())}), "
                   f"{c['entities']} entities, {c['bytes'] / MB:.0f} MB ({c['min_mb']:.1f}-{c['max_mb']:.1f} MB each), "
                   f"{c['text_bytes'] / 1024:.0f} KB of text"),
        ("serve: uploads", f"{s['accepted']}/{s['uploads']} accepted (202) in {s['acked_seconds']:.1f} s; "
                           f"all indexed after {s['seconds']:.1f} s"),
        ("serve: throughput", f"{s['uploads_per_s']:.2f} uploads/s, {s['chunks_per_s']:.1f} chunks/s "
                              f"({s['chunks']} chunks), {s['mb_per_s']:.1f} MB/s"),
        ("ingest (same files)", f"{i['files_per_s']:.2f} files/s, {i['chunks_per_s']:.1f} chunks/s "
                                f"({i['files']} files, {i['chunks']} chunks, {i['seconds']:.1f} s incl. model load; "
                                f"wall {i['wall_s']:.1f} s)"),
        ("ingest, net", f"{i['files_per_s_net']:.2f} files/s, {i['chunks_per_s_net']:.1f} chunks/s (less its fixed "
                        f"{i['fixed_cost_s']:.1f} s: start + model load + one tiny file)"),
        ("serve / ingest", f"{r['ratio_uploads_per_s']:.2f} (uploads/s), {r['ratio_chunks_per_s']:.2f} (chunks/s); "
                           f"net of ingest's fixed cost {r['ratio_chunks_per_s_net']:.2f}"),
        ("server RSS", f"{s['rss_baseline_mb']:.0f} MB idle -> peak {s['rss_peak_tree_mb']:.0f} MB "
                       f"(process tree; main process {s['rss_peak_main_mb']:.0f} MB)"),
        ("search during load", f"{s['searches']} answered: p50 {s['search_p50_ms']:.0f} ms, "
                               f"p95 {s['search_p95_ms']:.0f} ms, max {s['search_max_ms']:.0f} ms "
                               f"({s['search_mode']}; {s['searches_before_first_commit']} x 404 before the "
                               f"entity's first commit; idle afterwards p50 {s['search_idle_p50_ms']:.0f} ms)"),
        ("exactly once", f"{s['exactly_once']['documents']} documents, {s['exactly_once']['chunks']} chunks, "
                         f"{s['exactly_once']['markers_found_once']}/{c['files']} markers found in exactly one "
                         f"document; verify {'ok' if s['verify_ok'] else 'FAILED'}"),
        ("errors (load)", str(len(s["errors"])) + "".join(f"\n    {e}" for e in s["errors"][:10])),
    ]
    if k is not None:
        a = k["at_kill"]
        rows += [
            ("kill -9 at", f"{a['files_done']} files done, {a['jobs_active']} jobs unfinished "
                           f"({a['jobs_queued']} queued), {a['acknowledged']} uploads acknowledged, "
                           f"{a['cut_off']} cut off mid-upload"),
            ("after restart", f"restart {k['restart_s']:.1f} s; acknowledged jobs done after {k['resume_s']:.1f} s "
                              f"({k['acknowledged_statuses']}); {k['retried']} re-uploaded ({k['retry_statuses']})"),
            ("exactly once", f"{k['exactly_once']['documents']} documents, "
                             f"{k['exactly_once']['markers_found_once']}/{c['files']} markers found in exactly one "
                             f"document; verify {'ok' if k['verify_ok'] else 'FAILED'}"),
            ("errors (kill)", str(len(k["errors"])) + "".join(f"\n    {e}" for e in k["errors"][:10])),
        ]
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {text}" for name, text in rows]
    lines.append(f"machine: {r['machine']['cpus']} CPUs ({r['machine']['cpu_model']}), load average at start "
                 f"{', '.join(f'{x:.1f}' for x in r['machine']['loadavg_at_start'])}")
    lines.append("result: " + ("OK" if r["ok"] else "FAILED"))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
