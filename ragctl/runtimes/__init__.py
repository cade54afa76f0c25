"""Model runtimes other than plain torch (imported lazily by ragctl.embedding)."""
