"""Publishing one model version into the serving store, verified.

A version is *published* when ``<target>/<model>/<version>/.bridge-manifest.json``
exists: it lists every file (path, size, SHA-256) and is written last, only
after every copied object was read back and matched what was read from the
source. Nothing points at a version before that, and a published path is
never rewritten.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass

import yaml

from bridge.errors import BridgeError, CheckFailed, TemporaryError
from bridge.registry import ArtifactFile, ArtifactSource, ModelVersionInfo
from bridge.store import Store

log = logging.getLogger(__name__)

MARKER_NAME = ".bridge-manifest.json"
MARKER_FORMAT = 1


@dataclass(frozen=True)
class FileRecord:
    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class PublishedVersion:
    model: str
    version: str
    storage_uri: str  # ends with '/', what KServe downloads
    digest: str  # "sha256:<hex>" over every file record
    run_id: str | None
    source_uri: str
    files: tuple[FileRecord, ...]
    bytes_copied: int = 0


def content_digest(files: list[FileRecord] | tuple[FileRecord, ...]) -> str:
    """One digest for a whole model: stable under file order."""
    h = hashlib.sha256()
    for f in sorted(files, key=lambda r: r.path):
        h.update(f"{f.path}\0{f.size}\0{f.sha256}\n".encode())
    return "sha256:" + h.hexdigest()


def check_relative_path(path: str, model: str, version: str) -> None:
    """Refuse artifact paths that could escape the version's prefix."""
    parts = path.split("/")
    if not path or path.startswith("/") or "\\" in path or any(p in ("", ".", "..") for p in parts):
        raise CheckFailed(
            f"model {model!r} version {version}: artifact path {path!r} is not a plain relative path",
            hint="re-log the model without '..', absolute or empty path segments",
        )


def check_pyfunc(mlmodel: bytes, model: str, version: str) -> dict:
    try:
        spec = yaml.safe_load(mlmodel) or {}
    except yaml.YAMLError:
        raise CheckFailed(f"model {model!r} version {version}: MLmodel is not valid YAML") from None
    flavors = spec.get("flavors") if isinstance(spec, dict) else None
    if not isinstance(flavors, dict) or "python_function" not in flavors:
        found = ", ".join(sorted(flavors)) if isinstance(flavors, dict) else "none"
        raise CheckFailed(
            f"model {model!r} version {version} has no python_function (pyfunc) flavor "
            f"(flavors: {found}); KServe's MLflow runtime cannot serve it",
            hint="log it with a pyfunc-capable flavor, e.g. mlflow.sklearn.log_model",
        )
    return spec


def plan_files(files: list[ArtifactFile], model: str, version: str, uri: str) -> list[ArtifactFile]:
    """Validate a version's file list before a single byte is copied."""
    if not files:
        raise CheckFailed(
            f"model {model!r} version {version} has no artifacts at {uri}",
            hint="the run may have failed before logging the model",
        )
    for f in files:
        check_relative_path(f.path, model, version)
        if f.path == MARKER_NAME:
            raise CheckFailed(
                f"model {model!r} version {version}: artifact {MARKER_NAME} is reserved"
            )
    if not any(f.path == "MLmodel" for f in files):
        raise CheckFailed(
            f"model {model!r} version {version}: no MLmodel file at the artifact root {uri}",
            hint="register the model directory itself (the one holding MLmodel)",
        )
    return files


def marker_bytes(pv: PublishedVersion) -> bytes:
    body = {
        "format": MARKER_FORMAT,
        "model": pv.model,
        "version": pv.version,
        "run_id": pv.run_id,
        "source_uri": pv.source_uri,
        "digest": pv.digest,
        "files": [f.__dict__ for f in sorted(pv.files, key=lambda r: r.path)],
    }
    return (json.dumps(body, sort_keys=True, indent=1) + "\n").encode()


def parse_marker(data: bytes, storage_uri: str) -> PublishedVersion | None:
    try:
        body = json.loads(data)
        files = tuple(FileRecord(**f) for f in body["files"])
        pv = PublishedVersion(
            model=body["model"],
            version=str(body["version"]),
            storage_uri=storage_uri,
            digest=body["digest"],
            run_id=body.get("run_id"),
            source_uri=body["source_uri"],
            files=files,
        )
    except (ValueError, KeyError, TypeError):
        return None
    return pv if content_digest(files) == pv.digest else None


def check_same_version(existing: PublishedVersion, info: ModelVersionInfo) -> None:
    """A published path belongs to one registry version forever."""
    if existing.model != info.name or existing.source_uri != info.download_uri:
        raise CheckFailed(
            f"model {info.name!r} version {info.version}: {existing.storage_uri} already "
            f"holds {existing.model!r} from {existing.source_uri}; published paths are never rewritten",
            hint="point BRIDGE_TARGET_URI at a fresh prefix or remove the stale copy",
        )


class Publisher:
    def __init__(self, store: Store):
        self.store = store

    def version_prefix(self, model_key: str, version: str) -> str:
        return f"{self.store.prefix}{model_key}/{version}/"

    def published(self, model_key: str, version: str) -> PublishedVersion | None:
        prefix = self.version_prefix(model_key, version)
        data = self.store.get_bytes(prefix + MARKER_NAME)
        return parse_marker(data, self.store.uri(prefix)) if data is not None else None

    def publish(
        self, info: ModelVersionInfo, source: ArtifactSource, model_key: str
    ) -> PublishedVersion:
        """Copy, verify and mark one version; a no-op when it is already published."""
        existing = self.published(model_key, info.version)
        if existing is None:
            return self.copy(info, source, model_key)
        check_same_version(existing, info)
        return existing

    def copy(
        self, info: ModelVersionInfo, source: ArtifactSource, model_key: str
    ) -> PublishedVersion:
        """Copy, verify and mark a version that is not published yet."""
        files = plan_files(source.list_files(), info.name, info.version, info.download_uri)
        check_pyfunc(source.read_bytes("MLmodel"), info.name, info.version)
        prefix = self.version_prefix(model_key, info.version)
        leftovers = set(self.store.list_keys(prefix))
        written: list[str] = []
        try:
            records = []
            for f in files:
                with source.open(f.path) as stream:
                    written.append(prefix + f.path)
                    size, sha = self.store.upload_stream(prefix + f.path, stream)
                if f.size is not None and size != f.size:
                    raise TemporaryError(
                        f"model {info.name!r} version {info.version}: read {size} bytes of "
                        f"{f.path}, the registry lists {f.size}"
                    )
                records.append(FileRecord(f.path, size, sha))
            self._verify(prefix, records, info)
            stale = sorted(leftovers - {prefix + r.path for r in records})
            self.store.delete_keys(stale)
            pv = PublishedVersion(
                model=info.name,
                version=info.version,
                storage_uri=self.store.uri(prefix),
                digest=content_digest(records),
                run_id=info.run_id,
                source_uri=info.download_uri,
                files=tuple(records),
                bytes_copied=sum(r.size for r in records),
            )
            self.store.put_bytes(prefix + MARKER_NAME, marker_bytes(pv))
        except BaseException:
            self._discard(prefix, written, leftovers)
            raise
        log.info(
            "published %s version %s to %s (%d files, %d bytes, %s)",
            info.name,
            info.version,
            pv.storage_uri,
            len(records),
            pv.bytes_copied,
            pv.digest,
        )
        return pv

    def _verify(self, prefix: str, records: list[FileRecord], info: ModelVersionInfo) -> None:
        for r in records:
            size, sha = self.store.object_digest(prefix + r.path)
            if (size, sha) != (r.size, r.sha256):
                raise TemporaryError(
                    f"model {info.name!r} version {info.version}: {r.path} in the store does not "
                    "match what was read from MLflow; the copy was discarded and will be retried"
                )

    def _discard(self, prefix: str, written: list[str], leftovers: set[str]) -> None:
        """Best effort: leave no unpublished objects behind after a failed copy."""
        try:
            self.store.delete_keys(sorted(set(written) | leftovers))
        except BridgeError as exc:
            log.warning("could not clean up partial copy under %s: %s", prefix, exc)
