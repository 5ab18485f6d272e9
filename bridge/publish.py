"""Publishing one model version into the serving store, verified.

A version is *published* when ``<target>/<model>/<version>/.bridge-manifest.json``
exists: it lists every file (path, size, SHA-256) and is written last, only
after every copied object was read back and matched what was read from the
source. Nothing points at a version before that, and a published path is
never rewritten.

Several attempts may copy one version at once (two `bridge sync` runs, or a
daemon that lost its Lease while the new leader copies). They write the same
bytes to the same keys, so safety rests on three rules: an attempt never
deletes a key of the version's file list (a failed attempt only aborts its own
multipart uploads), the marker is written only after a final listing shows
every file at its recorded size, and it is written with ``If-None-Match: *``
so that the first complete attempt publishes and the others adopt its marker.
Unfinished uploads under the prefix are aborted only once it is published.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

import yaml

from bridge import layout
from bridge.errors import BridgeError, CheckFailed, TemporaryError
from bridge.keys import MARKER_NAME
from bridge.progress import Progress, is_live
from bridge.registry import ArtifactFile, ArtifactSource, ModelVersionInfo
from bridge.runtime_fit import NEEDS_FILES, ModelNeeds
from bridge.store import Store
from bridge.transfer import Engine, TransferOptions

log = logging.getLogger(__name__)

MARKER_FORMAT = 1
# Model files copied into the marker (for the runtime-fit check) only up to this size.
NEEDS_LIMIT = 64 * 1024


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
    registry_source: str | None = None  # the version's `source` in the registry
    needs: ModelNeeds | None = None  # None in markers written before it was recorded


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


def read_needs(
    mlmodel: bytes, source: ArtifactSource, files: dict[str, ArtifactFile]
) -> ModelNeeds | None:
    """What the model asks of its runtime, for the marker; None if its files are too big
    to carry there (the fit check then reads them from the store)."""
    present = [n for n in NEEDS_FILES if n in files]
    if any((files[n].size or 0) > NEEDS_LIMIT for n in present):
        return None
    texts = {n: source.read_bytes(n) for n in present}
    if any(len(t) > NEEDS_LIMIT for t in texts.values()):
        return None
    return ModelNeeds.from_files(mlmodel, texts)


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
    if pv.registry_source is not None:
        body["registry_source"] = pv.registry_source
    if pv.needs is not None:
        body["needs"] = pv.needs.__dict__
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
            registry_source=body.get("registry_source"),
            needs=ModelNeeds.from_record(body.get("needs")),
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


def no_fence() -> None:
    """The fence of a process that is alone: it never has to stop."""


class Publisher:
    def __init__(
        self, store: Store, options: TransferOptions | None = None, progress: str = "auto"
    ):
        self.store = store
        settings = getattr(store, "settings", None)
        if options is None:
            options = TransferOptions.from_settings(settings) if settings else TransferOptions()
        self.options = options
        self.progress = settings.progress if settings is not None else progress
        self._engine: Engine | None = None
        # Called before each file, each chunk and the marker; raises to stop a copy at once
        # (the daemon's: "still the leader?").
        self.fence: Callable[[], None] = no_fence

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = Engine(self.store, self.options)
        return self._engine

    def version_prefix(self, model_key: str, version: str) -> str:
        return layout.version_prefix(self.store.prefix, model_key, version)

    def published(self, model_key: str, version: str) -> PublishedVersion | None:
        prefix = self.version_prefix(model_key, version)
        data = self.store.get_bytes(prefix + MARKER_NAME)
        return parse_marker(data, self.store.uri(prefix)) if data is not None else None

    def needs(self, model_key: str, pv: PublishedVersion) -> ModelNeeds:
        """What a published version asks of its runtime: from its marker, or, for markers
        that predate recording it, read from the published files."""
        if pv.needs is not None:
            return pv.needs
        prefix = self.version_prefix(model_key, pv.version)
        present = {f.path for f in pv.files}
        texts = {n: self.store.get_bytes(prefix + n) or b"" for n in NEEDS_FILES if n in present}
        return ModelNeeds.from_files(self.store.get_bytes(prefix + "MLmodel"), texts)

    def publish(
        self, info: ModelVersionInfo, source: ArtifactSource, model_key: str
    ) -> PublishedVersion:
        """Copy, verify and mark one version; a no-op when it is already published."""
        existing = self.published(model_key, info.version)
        if existing is None:
            return self.copy(info, source, model_key)
        check_same_version(existing, info)
        return existing

    def _progress(self, info: ModelVersionInfo, files: list, what: str = "") -> Progress:
        total = sum(f.size or 0 for f in files)
        label = f"{info.name} v{info.version}{what}"
        return Progress(label, total, len(files), live=is_live(self.progress))

    def abort_unfinished_uploads(self, prefix: str) -> int:
        """Abort the unfinished multipart uploads under a *published* prefix.

        Only once the marker is there: then no upload can add anything the version
        needs, whether a killed run left it or a concurrent attempt (which deletes
        nothing when it fails) is still writing the same bytes.
        """
        try:
            stale = self.store.incomplete_uploads(prefix)
            for key, upload_id in stale:
                self.store.abort_multipart(key, upload_id)
        except BridgeError as exc:  # housekeeping: the version is published either way
            log.warning("could not abort unfinished uploads under %s: %s", prefix, exc.one_line())
            return 0
        if stale:
            log.info("aborted %d unfinished upload(s) under %s", len(stale), self.store.uri(prefix))
        return len(stale)

    def check_stored(self, prefix: str, records, model: str, version: str) -> None:
        """The final check before a marker: every file listed at its recorded size."""
        listed = self.store.list_keys(prefix)
        wrong = [r.path for r in records if listed.get(prefix + r.path) != r.size]
        if wrong:
            shown = ", ".join(sorted(wrong)[:5]) + (" ..." if len(wrong) > 5 else "")
            raise TemporaryError(
                f"model {model!r} version {version}: {len(wrong)} file(s) under "
                f"{self.store.uri(prefix)} vanished or changed size while copying ({shown}); "
                "not published, the next pass copies it again",
                hint="is another bridge copying to the same target?",
            )

    def _write_marker(self, prefix: str, pv: PublishedVersion, info: ModelVersionInfo, key: str):
        """Publish ``pv`` unless another attempt published first; return what is published."""
        if self.store.put_if_absent(prefix + MARKER_NAME, marker_bytes(pv)):
            return pv
        existing = self.published(key, info.version)
        if existing is None:
            raise TemporaryError(
                f"model {info.name!r} version {info.version}: another attempt is writing the "
                f"marker under {self.store.uri(prefix)}; the next pass reads it"
            )
        check_same_version(existing, info)
        log.info(
            "%s version %s was published by another attempt meanwhile", info.name, info.version
        )
        return existing

    def _published_meanwhile(
        self, info: ModelVersionInfo, model_key: str
    ) -> PublishedVersion | None:
        """After a failed copy: the version another attempt published meanwhile, if any."""
        try:
            existing = self.published(model_key, info.version)
        except BridgeError:
            return None
        if existing is None:
            return None
        check_same_version(existing, info)
        return existing

    def copy(
        self, info: ModelVersionInfo, source: ArtifactSource, model_key: str
    ) -> PublishedVersion:
        """Copy, verify and mark a version that is not published yet.

        Files go straight to their final keys; the marker is written last, so a
        crash at any instant leaves either no marker (the next run copies again)
        or a marker over a complete, verified target. A failed copy deletes no
        file (a concurrent attempt may have written and verified the same key):
        its own uploads are aborted, what it completed waits for the next attempt.
        """
        files = plan_files(source.list_files(), info.name, info.version, info.download_uri)
        mlmodel = source.read_bytes("MLmodel")
        check_pyfunc(mlmodel, info.name, info.version)
        needs = read_needs(mlmodel, source, {f.path: f for f in files})
        prefix = self.version_prefix(model_key, info.version)
        self.fence()
        # Keys of an older copy that this version does not have (never the marker: another
        # attempt may just have published it).
        leftovers = set(self.store.list_keys(prefix)) - {prefix + MARKER_NAME}
        written = [prefix + f.path for f in files]
        progress = self._progress(info, files)
        try:
            copied = self.engine.copy_files(
                source, [f.path for f in files], prefix, progress, fence=self.fence
            )
            records = []
            for f, c in zip(files, copied, strict=True):
                if f.size is not None and c.size != f.size:
                    raise TemporaryError(
                        f"model {info.name!r} version {info.version}: read {c.size} bytes of "
                        f"{f.path}, the registry lists {f.size}"
                    )
                records.append(FileRecord(c.path, c.size, c.sha256))
            stale = sorted(leftovers - set(written))
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
                registry_source=info.source,
                needs=needs,
            )
            self.fence()
            self.check_stored(prefix, records, info.name, info.version)
            self.fence()
            pv = self._write_marker(prefix, pv, info, model_key)
        except BridgeError:
            other = self._published_meanwhile(info, model_key)
            if other is None:
                raise
            log.info(
                "%s version %s: this copy failed, but another attempt published it meanwhile",
                info.name,
                info.version,
            )
            return other
        self.abort_unfinished_uploads(prefix)
        progress.finish(self.engine.mode(source))
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

    # --- verify and repair ---------------------------------------------------

    def verify(self, pv: PublishedVersion, model_key: str) -> tuple[list[str], list[str]]:
        """Re-hash a published target: (files that do not match the marker, extra keys)."""
        prefix = self.version_prefix(model_key, pv.version)
        keys = self.store.list_keys(prefix)
        expected = {prefix + r.path for r in pv.files} | {prefix + MARKER_NAME}
        extra = sorted(k for k in keys if k not in expected)
        damaged = layout.damaged_files(
            pv.files, prefix, keys, self.engine.object_digest, workers=self.options.concurrency
        )
        bad = {path for path, _ in damaged}
        return [r.path for r in pv.files if r.path in bad], extra

    def verify_and_repair(
        self,
        pv: PublishedVersion,
        info: ModelVersionInfo,
        source: Callable[[], ArtifactSource],
        model_key: str,
    ) -> tuple[PublishedVersion, bool]:
        """Re-hash ``pv``; if anything changed, repair it. (version, repaired?)

        Repair never leaves a marker over an incomplete target: the marker is
        deleted first (the version is unpublished from then on), the damaged
        files are copied again and verified, extra objects are removed, and the
        same marker is written back last. A crash in between leaves no marker,
        and the next sync copies the version again.
        """
        bad, extra = self.verify(pv, model_key)
        if not bad and not extra:
            log.info(
                "%s version %s verified: %d files match %s",
                info.name,
                info.version,
                len(pv.files),
                pv.digest,
            )
            return pv, False
        prefix = self.version_prefix(model_key, pv.version)
        log.warning(
            "%s version %s at %s does not match its marker (changed: %s; unexpected: %s); repairing",
            info.name,
            info.version,
            pv.storage_uri,
            ", ".join(bad) or "none",
            ", ".join(k[len(prefix) :] for k in extra) or "none",
        )
        self.store.delete_keys([prefix + MARKER_NAME])
        src = source()
        listed = {f.path: f for f in src.list_files()}
        records = {r.path: r for r in pv.files}
        missing = [p for p in bad if p not in listed]
        if missing:
            raise CheckFailed(
                f"model {info.name!r} version {info.version}: cannot repair {pv.storage_uri}, "
                f"the source no longer has {', '.join(missing)}"
            )
        progress = self._progress(info, [listed[p] for p in bad], " (repair)")
        copied = self.engine.copy_files(src, bad, prefix, progress, fence=self.fence)
        for c in copied:
            r = records[c.path]
            if (c.size, c.sha256) != (r.size, r.sha256):
                raise CheckFailed(
                    f"model {info.name!r} version {info.version}: {c.path} in MLflow no longer "
                    f"matches the published digest {pv.digest}; the version stays unpublished",
                    hint="artifacts of a registered version should never change; re-register it",
                )
        self.store.delete_keys(extra)
        self.fence()
        self.check_stored(prefix, pv.files, info.name, info.version)
        self.fence()
        self._write_marker(prefix, pv, info, model_key)
        self.abort_unfinished_uploads(prefix)
        progress.finish(self.engine.mode(src) + ", repair")
        repaired = sum(c.size for c in copied)
        log.info(
            "%s version %s repaired: %d file(s), %d bytes",
            info.name,
            info.version,
            len(copied),
            repaired,
        )
        return replace(pv, bytes_copied=repaired), True
