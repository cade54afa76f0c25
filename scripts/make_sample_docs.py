#!/usr/bin/env python3
"""Generate the binary documents of ``sample_docs/`` (PDF, DOCX, PPTX).

``sample_docs/`` is a small, original corpus for demos and tests: one subdirectory per
entity, each about a fictional company. Every file in it is ingested, so this description
lives here and not in a README inside the tree.

* ``acme-corp/`` – maker of RoadRunner delivery drones: a long product handbook (Markdown,
  ~1500 words, several headings → several 256-token chunks), a refund policy with a unique
  **45-day** refund window (HTML), a travel and expense policy (PDF), a 2024 price list
  (CSV) and leadership meeting notes (TXT). Nested folders: ``policies/``, ``meetings/``.
* ``globex/`` – logistics software: the **Kubernetes cluster outage postmortem**
  (Markdown), an engineering onboarding deck (PPTX), a service catalog (JSON), a parental
  leave policy (TXT) and a key-rotation notice (EML, plain text).
* ``initech/`` – banking software: the **TPS report cover sheet procedure** (DOCX, with
  headings and a table), Q3 all-hands notes (Markdown), a desk-move notice (EML, HTML
  body), an equipment inventory (CSV, ``;``-separated) and a mainframe migration status
  report (PDF, two pages).

Text formats are plain files in the tree; this script writes only the binary ones, with
fixed timestamps so that re-running it reproduces byte-identical files (content hashes stay
stable). The writers live in ``ragctl.bench.samples``; the PDFs come from its tiny
generator (standard Helvetica font, WinAnsiEncoding; no reportlab). Run from anywhere::

    python scripts/make_sample_docs.py [--out sample_docs] [--check]

``--check`` parses every generated file with ``ragctl.parsing`` and prints the block counts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ragctl.bench.samples import make_docx, make_pdf, make_pptx  # noqa: E402

# --------------------------------------------------------------------------- documents


def tps_cover_sheet_docx() -> bytes:
    return make_docx(
        [
            ("title", "TPS Report Cover Sheet Procedure"),
            ("text", "Every Testing Procedure Specification (TPS) report that leaves the Initech "
             "software division must carry the standard cover sheet, form IN-TPS-7. This procedure "
             "explains who fills in the cover sheet, what goes on it and where the signed copy is "
             "filed."),
            ("heading", "When a cover sheet is required", 1),
            ("text", "A cover sheet is required for every TPS report, including drafts sent to the "
             "quality assurance group and reports that are only filed electronically. Reports "
             "without a cover sheet are returned to the author by the document control desk "
             "without review."),
            ("heading", "Filling in form IN-TPS-7", 1),
            ("text", "The author enters the project code, the test cycle number, the report version "
             "and the date of the last test run. The reviewing team lead signs the sheet in blue "
             "ink, and the document control desk stamps it with the filing date."),
            ("table", [
                ("Field", "Filled in by", "Example"),
                ("Project code", "Author", "INT-LEDGER-2024"),
                ("Test cycle number", "Author", "Cycle 14"),
                ("Team lead signature", "Team lead", "signed in blue ink"),
                ("Filing date stamp", "Document control desk", "12 Nov 2024"),
            ]),
            ("heading", "Common mistakes", 2),
            ("text", "The most frequent mistake is using the retired form IN-TPS-6, which lacks the "
             "test cycle field. A second frequent mistake is sending the report to the team lead "
             "before attaching the cover sheet, which means the report has to be signed twice. "
             "Keep a stack of current cover sheets next to the fourth-floor printer; the document "
             "control desk refills it on Mondays."),
        ],
        title="TPS report cover sheet procedure",
    )


def onboarding_pptx() -> bytes:
    return make_pptx(
        [
            {
                "title": "Welcome to Globex Engineering",
                "subtitle": "Your first two weeks on the Freightline platform team",
                "notes": "Presenter: introduce the buddy system; every new engineer gets a buddy "
                "for the first month.",
            },
            {
                "title": "Week one checklist",
                "bullets": [
                    "Collect your hardware security key from the IT desk on day one",
                    "Request access to the Globex vault and the prod-euw-3 read-only dashboards",
                    "Deploy the hello-freight sample service to the staging cluster",
                    "Read the last three postmortems, starting with the February etcd outage",
                ],
            },
            {
                "title": "Who to ask",
                "table": [
                    ("Topic", "Team", "Channel"),
                    ("Kubernetes clusters", "Platform", "#platform-help"),
                    ("Customs Autopilot", "Trade compliance", "#customs-dev"),
                    ("Payroll and leave", "People team", "#ask-people"),
                ],
                "notes": "On-call starts only after the second month.",
            },
        ],
        title="Globex engineering onboarding",
    )


def travel_policy_pdf() -> bytes:
    return make_pdf(
        [
            [
                ("title", "Acme Corp Travel and Expense Policy"),
                ("text", "This policy applies to every Acme Corp employee who travels to visit "
                 "customers, attend trade fairs or work at the Tumbleweed Flats plant. It was "
                 "approved by the finance committee in January 2024."),
                ("title", "Flights and trains"),
                ("text", "Book economy class for flights shorter than six hours and premium economy "
                 "for longer flights. Trains are preferred for trips under four hours. Bookings go "
                 "through the Mesa Travel portal so that the company can track carbon emissions."),
                ("title", "Hotels and meals"),
                ("text", "Hotel rooms are reimbursed up to 180 dollars per night in the United States "
                 "and up to 160 € per night in Europe. The daily meal allowance is 65 dollars; "
                 "alcohol is never reimbursed. Receipts must be uploaded within thirty days of the "
                 "trip or the claim is rejected."),
            ]
        ],
        title="Acme Corp Travel and Expense Policy",
    )


def mainframe_status_pdf() -> bytes:
    return make_pdf(
        [
            [
                ("title", "Initech Mainframe Migration - Status Report, October 2024"),
                ("text", "The project moves the InterestPro batch jobs from the ageing mainframe in "
                 "the Austin data centre to containerised services. 61 of 94 nightly batch jobs "
                 "now run on the new platform. The overall status is amber because the "
                 "interest-accrual job still differs from the mainframe results by a few cents "
                 "on roughly one account in ten thousand."),
                ("title", "Risks"),
                ("text", "The two engineers who understand the COBOL date-conversion routines retire "
                 "in March 2025. Knowledge transfer sessions are scheduled every Tuesday until "
                 "then, and each routine gets a written specification before it is ported."),
            ],
            [
                ("title", "Next steps"),
                ("text", "Fix the rounding difference in the interest-accrual job by switching to "
                 "decimal arithmetic with banker's rounding. Run both platforms in parallel for "
                 "the whole of November, comparing every output file. Switch off the mainframe "
                 "batch window on 31 January 2025 if the parallel run shows no differences."),
            ],
        ],
        title="Initech Mainframe Migration Status",
    )


GENERATED = {
    "acme-corp/policies/travel-expense-policy.pdf": travel_policy_pdf,
    "globex/onboarding-deck.pptx": onboarding_pptx,
    "initech/procedures/tps-report-cover-sheet.docx": tps_cover_sheet_docx,
    "initech/projects/mainframe-migration-status.pdf": mainframe_status_pdf,
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--out", type=Path, default=ROOT / "sample_docs")
    ap.add_argument("--check", action="store_true", help="parse every generated file afterwards")
    args = ap.parse_args(argv)
    for rel, build in GENERATED.items():
        target = args.out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(build())
        print(f"wrote {target} ({target.stat().st_size} bytes)")
    if args.check:
        from ragctl.parsing import parse_file

        for rel in GENERATED:
            doc = parse_file(args.out / rel)
            print(f"{rel}: {doc.parser}, {len(doc.blocks)} blocks, first: {doc.blocks[0].text[:60]!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
