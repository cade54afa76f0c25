#!/usr/bin/env python
"""Migrate a store's monolithic doc_id_name_mapping.json into per-entity shards.

    python scripts/migrate_to_sharded_storage.py --store DIR [--dry-run] [--json]

A thin wrapper: the same options, output and exit codes as `ragctl migrate-to-sharded`, over
the same library function, `ragctl.migrate.migrate_to_sharded`.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import typer  # noqa: E402

from ragctl.cli.migrate import migrate_command  # noqa: E402


def main() -> None:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)
    app.command()(migrate_command)  # a single command: it is the script's whole interface
    app()


if __name__ == "__main__":
    main()
