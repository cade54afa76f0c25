"""Fault injection for subprocess tests: put this directory on PYTHONPATH and every Python
process of the run (the ingest and its spawned parse workers) gets three extra "formats":

  .segv   the parser dereferences NULL (SIGSEGV in native code)
  .killme the parser process is killed with SIGKILL (as the OOM killer does)
  .hang   the parser never returns (stuck in a native call)

and the model runs out of memory (MemoryError from encode) on any batch holding a chunk with
the text RAGCTL-FAULT-ENCODE-OOM.

Nothing of this is in ragctl itself: the test suite adds real readers that really crash.
"""

import os
import signal
import time


def _install() -> None:
    if os.environ.get("RAGCTL_FAULTS") != "1":
        return
    import ctypes

    import ragctl.parsing as parsing
    from ragctl.parsing import native

    def segv(_data):
        ctypes.string_at(0)

    def killme(_data):
        os.kill(os.getpid(), signal.SIGKILL)

    def hang(_data):
        while True:
            time.sleep(1)

    for suffix, func in ((".segv", segv), (".killme", killme), (".hang", hang)):
        native.READERS[suffix] = native.Reader("fault", func, "bytes")
    parsing.SUPPORTED_SUFFIXES = frozenset(native.READERS)

    from ragctl import embedding

    real_encode = embedding.LocalEmbedder.encode

    def encode(self, texts, *args, **kwargs):
        if any("RAGCTL-FAULT-ENCODE-OOM" in t for t in texts):
            raise MemoryError("cannot allocate memory for the encode batch")
        return real_encode(self, texts, *args, **kwargs)

    embedding.LocalEmbedder.encode = encode


_install()
