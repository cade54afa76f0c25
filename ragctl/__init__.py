"""ragctl: bulk-index document trees into per-entity FAISS indexes.

Importing this package is cheap: torch, faiss, sentence-transformers and unstructured are
imported lazily by the modules that need them.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "get_entity_rag_manager", "JSONStorage"]


def __getattr__(name: str):  # PEP 562: lazy re-exports keep `import ragctl` fast
    if name == "get_entity_rag_manager":
        from ragctl.manager import get_entity_rag_manager

        return get_entity_rag_manager
    if name == "JSONStorage":
        from ragctl.storage.json_storage import JSONStorage

        return JSONStorage
    raise AttributeError(name)
