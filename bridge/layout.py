"""Where a published version lives in the store, and whether it is still intact (pure).

``<target prefix><model key>/<version>/`` holds the version's files and, written last,
the marker (bridge.keys.MARKER_NAME) that lists every file with its size and SHA-256.
Publishing, `bridge status`, the daemon's repair and the promotion gate all ask the same
question — does what the store holds still match the marker? — and answer it here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol


class _Recorded(Protocol):
    path: str
    size: int
    sha256: str


def version_prefix(store_prefix: str, model_key: str, version: str) -> str:
    return f"{store_prefix}{model_key}/{version}/"


def damaged_files(
    files: Iterable[_Recorded],
    prefix: str,
    present: Mapping[str, int],
    digest: Callable[[str, int], tuple[int, str]] | None = None,
    *,
    workers: int = 1,
    first_only: bool = False,
) -> list[tuple[str, str]]:
    """``(path, what is wrong)`` for every file the marker lists that the store no longer
    holds as recorded: missing, another size (from one listing, ``present``: key -> size)
    or, when ``digest(key, size)`` is given, another SHA-256 (read back, ``workers`` at a
    time). Empty: intact."""
    problems: list[tuple[str, str]] = []
    sized = []
    for rec in files:
        key = prefix + rec.path
        if key not in present:
            problems.append((rec.path, f"{rec.path} is missing"))
        elif present[key] != rec.size:
            problems.append(
                (rec.path, f"{rec.path} has {present[key]} bytes, the marker says {rec.size}")
            )
        else:
            sized.append(rec)
        if problems and first_only:
            return problems
    if digest is None or not sized:
        return problems

    def changed(rec) -> bool:
        return digest(prefix + rec.path, rec.size) != (rec.size, rec.sha256)

    if workers > 1 and len(sized) > 1:
        with ThreadPoolExecutor(min(workers, len(sized)), thread_name_prefix="bridge-verify") as p:
            verdicts = list(p.map(changed, sized))
    else:
        verdicts = []
        for rec in sized:
            verdicts.append(changed(rec))
            if verdicts[-1] and first_only:
                break
    problems += [
        (r.path, f"{r.path} does not match its SHA-256")
        for r, bad in zip(sized, verdicts, strict=False)
        if bad  # shorter after first_only
    ]
    return problems[:1] if first_only else problems
