"""The GitOps output directory: one YAML file per resource, written atomically.

Only files that carry bridge's managed-by label are ever changed or removed,
so the directory can hold hand-written files too. A file whose content did
not change is not touched (same bytes, same mtime), so Git sees no diff.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bridge.keys import MANAGED_BY, MANAGED_BY_LABEL

KUSTOMIZATION = "kustomization.yaml"
_OWNED_MARK = f"{MANAGED_BY_LABEL}: {MANAGED_BY}"


@dataclass
class OutputChange:
    written: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)  # stale, but kept: removal was refused


def atomic_write(path: Path, text: str) -> bool:
    """Write ``text`` to ``path`` via a temporary file and rename; False if already equal."""
    data = text.encode()
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates 0600; manifests are meant to be read (and committed).
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _is_owned(text: str) -> bool:
    """The document's own metadata.labels carry bridge's label (a hand-written file that
    merely selects on that label, e.g. a NetworkPolicy, is not bridge's)."""
    try:
        doc = yaml.load(text, Loader=_Loader)  # noqa: S506 - a safe loader
    except yaml.YAMLError:
        return False
    labels = ((doc.get("metadata") or {}).get("labels") or {}) if isinstance(doc, dict) else {}
    return isinstance(labels, dict) and labels.get(MANAGED_BY_LABEL) == MANAGED_BY


class OutputDir:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def owned_files(
        self,
        skip: frozenset[str] | set[str] = frozenset(),
        rendered: Mapping[str, str] | None = None,
    ) -> dict[str, str]:
        """name -> text of every YAML file here that bridge wrote (except those in ``skip``).

        ``rendered``: what bridge would write now, under each name. A file equal to it
        is bridge's without parsing it (an unchanged pass over a large directory
        otherwise parses every file it is about to leave as it is)."""
        if not self.path.is_dir():
            return {}
        rendered = rendered or {}
        owned = {}
        for p in sorted(self.path.glob("*.yaml")):
            if p.name == KUSTOMIZATION or p.name in skip:
                continue
            text = p.read_text()
            if _OWNED_MARK in text and (rendered.get(p.name) == text or _is_owned(text)):
                owned[p.name] = text
        return owned

    def stale(self, desired: dict[str, str] | set[str], in_scope) -> list[str]:
        """Owned files ``reconcile`` would remove: not desired, and ``in_scope``."""
        return [n for n in sorted(self.owned_files(skip=set(desired))) if in_scope(n)]

    def reconcile(self, desired: dict[str, str], in_scope, *, prune: bool = True) -> OutputChange:
        """Make the owned files equal ``desired`` for every file name ``in_scope(name)`` accepts.

        With ``prune=False`` stale files stay (and stay listed): nothing is removed."""
        change = OutputChange()
        self.path.mkdir(parents=True, exist_ok=True)
        for name in sorted(desired):
            if atomic_write(self.path / name, desired[name]):
                change.written.append(name)
            else:
                change.unchanged.append(name)
        # Files just written are bridge's own; only the others need a closer look.
        listed = {name for name, text in desired.items() if _OWNED_MARK in text}
        for name in sorted(self.owned_files(skip=set(desired))):
            if in_scope(name) and prune:
                (self.path / name).unlink()
                change.removed.append(name)
            else:
                if in_scope(name):
                    change.held.append(name)
                listed.add(name)
        kustomization = self.path / KUSTOMIZATION
        # A kustomization.yaml the user wrote is theirs: leave it alone.
        if not kustomization.exists() or _OWNED_MARK in kustomization.read_text():
            if atomic_write(kustomization, self._kustomization(sorted(listed))):
                change.written.append(KUSTOMIZATION)
        return change

    def _kustomization(self, resources: list[str]) -> str:
        body = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": resources,
        }
        return f"# {_OWNED_MARK}\n" + yaml.safe_dump(body, sort_keys=True, default_flow_style=False)
