"""The seeded synthetic corpus of `ragctl bench` (and of the scaling scripts and tests).

`generate_corpus(root, entities, docs, seed)` writes N entity directories x M documents of
multi-paragraph office English with headings: .md/.txt/.html and some .docx/.pdf (through
`ragctl.bench.samples`), ~1-30 KB of text each; the same seed gives the same bytes. A small
grammar gives the tokenizer ordinary prose (~4.5 characters per word piece) and never enough
repetition that documents collide by hash. `Prose` is also the text source of the parse
benchmark (`ragctl.bench.parsing`): one prose generator for every benchmark.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragctl.bench import samples
from ragctl.errors import UsageError

_COMPANIES = [
    "Acme Corp", "Globex", "Initech", "Umbrella Logistics", "Stark Freight", "Wayne Analytics",
    "Hooli", "Vandelay Imports", "Soylent Foods", "Tyrell Systems", "Cyberdyne Labs",
    "Wonka Industries", "Massive Dynamic", "Oscorp Energy", "Aperture Health", "Gringotts Bank",
]
_TEAMS = [
    "the platform team", "the finance committee", "the people team", "customer support",
    "the security office", "the data engineering group", "the legal department", "facilities",
    "the quality assurance group", "the sales organisation", "the procurement desk",
    "the site reliability engineers", "the product council", "internal audit", "the board",
]
_PEOPLE = [
    "Maria Lopez", "James Okafor", "Wei Chen", "Priya Natarajan", "Lukas Novak", "Aisha Bello",
    "Tom Becker", "Sofia Rossi", "Kenji Watanabe", "Emma Larsen", "Omar Haddad", "Grace Kim",
    "Daniel Moreau", "Fatima Zahra", "Noah Fischer", "Elena Petrova",
]
_SUBJECTS = [
    "the quarterly revenue forecast", "the new expense policy", "the customer onboarding flow",
    "the cluster upgrade", "the data retention schedule", "the vendor contract", "the on-call rotation",
    "the refund process", "the hiring plan", "the security review", "the migration to the new ledger",
    "the travel budget", "the release checklist", "the incident response runbook", "the pricing model",
    "the warehouse inventory", "the support backlog", "the annual audit", "the training programme",
    "the disaster recovery test", "the office relocation", "the procurement workflow",
    "the service level agreement", "the parental leave policy", "the API deprecation plan",
]
_VERBS = [
    "reviewed", "approved", "postponed", "simplified", "rewrote", "documented", "audited",
    "measured", "extended", "replaced", "discussed", "challenged", "finalised", "automated",
    "rolled back", "escalated", "summarised", "benchmarked", "consolidated", "published",
]
_REASONS = [
    "because the previous version caused too many manual corrections",
    "after two customers reported inconsistent invoices",
    "so that new employees can find the answer without asking",
    "since the regulator asked for clearer records",
    "to reduce the time between a request and its approval",
    "because the old tooling is no longer supported by the vendor",
    "after the outage in the western data centre",
    "to keep costs within the budget agreed in January",
    "because response times doubled during the peak season",
    "so that every entity keeps its own records separate",
]
_DETAILS = [
    "Receipts must be uploaded within {n} days, otherwise the claim is rejected automatically.",
    "The change affects roughly {n} percent of all open cases and will be rolled out in {month}.",
    "{person} will own the follow-up and report progress at the next weekly meeting.",
    "A dry run on the staging environment took {n} minutes and finished without errors.",
    "Costs are expected to fall by {n} thousand dollars per year once the work is complete.",
    "The team agreed to revisit the decision in {month}, when more data is available.",
    "Questions should go to {person}, who keeps the decision log up to date.",
    "The document control desk keeps a signed copy of every version for {n} years.",
    "During the test, {n} requests per second were handled with no measurable increase in latency.",
    "Employees may carry over up to {small} days of unused leave into the next calendar year.",
    "The backlog shrank from {n} tickets to {small} tickets over the last sprint.",
    "Every exception must be approved in writing by {person} before the work starts.",
    "The rollout is split into {small} phases so that each one can be reverted independently.",
    "Invoices above {n} thousand dollars need a second signature from {team}.",
    "Monitoring dashboards now show the error rate per region, refreshed every {small} minutes.",
]
_OPENERS = [
    "In {month}, {team} {verb} {subject} {reason}.",
    "{person} {verb} {subject} together with {team}.",
    "{company} {verb} {subject} {reason}.",
    "This section explains how {subject} works at {company} and who is responsible for it.",
    "Last week {team} {verb} {subject}; the notes below capture what was decided.",
    "The goal of {subject} is simple: fewer surprises for {team} and for our customers.",
    "Before anything else, read how {subject} interacts with {subject2}.",
    "{team} {verb} {subject} and {verb2} {subject2} in the same review.",
]
_CONNECTORS = ["However,", "In practice,", "As a result,", "For example,", "In addition,", "Finally,", "Meanwhile,", "Note that"]
_MONTHS = [
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
]
_HEADINGS = [
    "Background", "Scope", "Responsibilities", "Process overview", "Exceptions", "Timeline",
    "Open questions", "Risks and mitigations", "Costs", "Decisions", "Next steps", "Contacts",
    "Frequently asked questions", "Metrics", "History of changes", "Glossary", "Approvals",
]
_KINDS = ["Policy", "Handbook", "Postmortem", "Meeting notes", "Status report", "Runbook", "Guide", "Proposal"]

# Format mix (weights) and sizes of the generated documents.
FORMAT_WEIGHTS = {".md": 34, ".html": 28, ".txt": 22, ".docx": 8, ".pdf": 8}
MIN_DOC_BYTES, MAX_DOC_BYTES = 1_000, 30_000
_SUBDIRS = ["", "", "policies", "notes", "reports/2024"]



class Prose:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def _fill(self, template: str) -> str:
        r = self.rng
        subject, subject2 = r.sample(_SUBJECTS, 2)
        verb, verb2 = r.sample(_VERBS, 2)
        return template.format(
            month=r.choice(_MONTHS), team=r.choice(_TEAMS), verb=verb, verb2=verb2, subject=subject,
            subject2=subject2, reason=r.choice(_REASONS), person=r.choice(_PEOPLE),
            company=r.choice(_COMPANIES), n=r.randint(3, 480), small=r.randint(2, 9),
        )

    def sentence(self) -> str:
        r = self.rng
        text = self._fill(r.choice(_OPENERS) if r.random() < 0.45 else r.choice(_DETAILS))
        text = text[0].upper() + text[1:]
        if r.random() < 0.25:
            text = f"{r.choice(_CONNECTORS)} {text[0].lower()}{text[1:]}"
        return text

    def paragraph(self) -> str:
        return " ".join(self.sentence() for _ in range(self.rng.randint(2, 7)))

    def title(self, company: str) -> str:
        return f"{company} {self.rng.choice(_KINDS).lower()}: {self.rng.choice(_SUBJECTS)[4:]}"

    def document(self, target_bytes: int, company: str) -> tuple[str, list[tuple[str, str]]]:
        """(title, [("heading"|"text"|"item", text), ...]) of roughly `target_bytes` of text."""
        items: list[tuple[str, str]] = []
        size = 0
        headings = self.rng.sample(_HEADINGS, len(_HEADINGS))
        while size < target_bytes:
            if not items or self.rng.random() < 0.22:
                head = headings.pop() if headings else f"Part {len(items)}"
                items.append(("heading", head))
                size += len(head)
            if self.rng.random() < 0.12:
                for _ in range(self.rng.randint(2, 5)):
                    item = self.sentence()
                    items.append(("item", item))
                    size += len(item)
            else:
                para = self.paragraph()
                items.append(("text", para))
                size += len(para)
        return self.title(company), items


def _render_md(title: str, items: list[tuple[str, str]]) -> bytes:
    out = [f"# {title}", ""]
    for kind, text in items:
        out += [f"## {text}", ""] if kind == "heading" else [f"- {text}"] if kind == "item" else [text, ""]
    return "\n".join(out).encode()


def _render_txt(title: str, items: list[tuple[str, str]]) -> bytes:
    out = [title.upper(), ""]
    for kind, text in items:
        out += [text, "-" * len(text), ""] if kind == "heading" else [f"  * {text}"] if kind == "item" else [text, ""]
    return "\n".join(out).encode()


def _render_html(title: str, items: list[tuple[str, str]]) -> bytes:
    from html import escape

    out = [
        "<!DOCTYPE html>",
        f'<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title></head><body>',
        '<nav><a href="/">Home</a> | <a href="/policies">Policies</a></nav>',
        f"<main><h1>{escape(title)}</h1>",
    ]
    in_list = False
    for kind, text in items:
        if kind != "item" and in_list:
            out.append("</ul>")
            in_list = False
        if kind == "heading":
            out.append(f"<h2>{escape(text)}</h2>")
        elif kind == "item":
            if not in_list:
                out.append("<ul>")
                in_list = True
            out.append(f"<li>{escape(text)}</li>")
        else:
            out.append(f"<p>{escape(text)}</p>")
    if in_list:
        out.append("</ul>")
    out.append("</main><footer>Internal use only.</footer></body></html>")
    return "\n".join(out).encode()


def _render_docx(title: str, items: list[tuple[str, str]]) -> bytes:
    body: list[tuple[Any, ...]] = [("title", title)]
    for kind, text in items:
        body.append(("heading", text, 1) if kind == "heading" else ("text", text))
    return bytes(samples.make_docx(body, title=title))


def _render_pdf(title: str, items: list[tuple[str, str]]) -> bytes:
    import textwrap

    # make_pdf's layout: lines from y=740 down to 50; titles 19pt per line (62 characters),
    # text 15pt per line (92 characters), 12pt after each paragraph.
    pages: list[list[tuple[str, str]]] = []
    page: list[tuple[str, str]] = []
    y = 740
    for kind, text in [("title", title)] + [("title" if k == "heading" else "text", t) for k, t in items]:
        width, step = (62, 19) if kind == "title" else (92, 15)
        lines = max(1, len(textwrap.wrap(text, width)))
        if page and y - step * (lines - 1) < 60:
            pages.append(page)
            page, y = [], 740
        page.append((kind, text))
        y -= step * lines + 12
    if page:
        pages.append(page)
    return bytes(samples.make_pdf(pages, title=title))


@dataclass
class CorpusInfo:
    root: Path
    entities: int
    documents: int
    bytes: int
    formats: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"root": str(self.root), "entities": self.entities, "documents": self.documents, "bytes": self.bytes, "formats": self.formats}


def generate_corpus(root: Path, entities: int, docs: int, seed: int = 0) -> CorpusInfo:
    """Write N entity directories x M documents under `root`; the same seed, the same bytes.

    Sizes are log-uniform between ~1 KB and ~30 KB of text; formats follow FORMAT_WEIGHTS
    (.docx/.pdf via ragctl.bench.samples, the writers behind scripts/make_sample_docs.py).
    """
    if entities < 1 or docs < 1:
        raise UsageError("--entities and --docs must be at least 1")
    rng = random.Random(seed)
    suffixes = list(FORMAT_WEIGHTS)
    weights = [FORMAT_WEIGHTS[s] for s in suffixes]
    root.mkdir(parents=True, exist_ok=True)
    info = CorpusInfo(root=root, entities=entities, documents=0, bytes=0)
    width = max(2, len(str(entities)))
    for e in range(entities):
        company = _COMPANIES[e % len(_COMPANIES)]
        entity_dir = root / f"entity-{e:0{width}d}"
        prose = Prose(random.Random(rng.getrandbits(64)))
        for d in range(docs):
            suffix = rng.choices(suffixes, weights)[0]
            target = int(math.exp(rng.uniform(math.log(MIN_DOC_BYTES), math.log(MAX_DOC_BYTES))))
            title, items = prose.document(target, company)
            if suffix == ".md":
                data = _render_md(title, items)
            elif suffix == ".txt":
                data = _render_txt(title, items)
            elif suffix == ".html":
                data = _render_html(title, items)
            elif suffix == ".docx":
                data = _render_docx(title, items)
            else:
                data = _render_pdf(title, items)
            sub = _SUBDIRS[rng.randrange(len(_SUBDIRS))]
            path = entity_dir / sub / f"doc-{d:03d}-{_slug(title)}{suffix}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            info.documents += 1
            info.bytes += len(data)
            info.formats[suffix] = info.formats.get(suffix, 0) + 1
    return info


def _slug(text: str) -> str:
    words = "".join(c if c.isalnum() else " " for c in text.lower()).split()
    return "-".join(words[:5])


def describe_corpus(root: Path) -> CorpusInfo:
    from ragctl.discovery import discover_entities

    sources = discover_entities(root)
    info = CorpusInfo(root=root, entities=len(sources), documents=0, bytes=0)
    for source in sources:
        for f in source.list_files():
            info.documents += 1
            info.bytes += f.abs_path.stat().st_size
            suffix = f.abs_path.suffix.lower() or "(none)"
            info.formats[suffix] = info.formats.get(suffix, 0) + 1
    return info
