"""Adapters from other frameworks onto a ragctl store (LangChain, MCP).

Each submodule imports its framework at module level, so import the submodule itself
(`from ragctl.integrations.langchain import RagctlVectorStore`); this package imports nothing.
"""
