"""Does a model fit the serving runtime? (pure)

KServe's MLflow runtime (MLServer) loads the pyfunc flavor with the packages
baked into its image; it does not install the model's ``requirements.txt``.
A model that pins versions the image does not have fails only when the pod
starts. This module compares what a model asks for (``requirements.txt``,
``python_env.yaml``, the MLflow version in ``MLmodel``) with a configurable
description of the runtime image, and picks a ``modelFormat`` version that a
runtime actually lists.

The runtime image is described as a list of entries, one per package:
``name`` (any version), ``name==1.2.3`` (exact, as ``pip freeze`` prints it)
or ``name==1.*`` (a release series); ``python==3.10.*`` names the interpreter.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

# What KServe's default kserve-mlserver image (MLServer with its MLflow and
# scikit-learn/XGBoost/LightGBM runtimes) is built with, by release series.
# Describe your own image with BRIDGE_RUNTIME_PACKAGES or a `pip freeze` file
# in BRIDGE_RUNTIME_PACKAGES_FILE.
DEFAULT_RUNTIME_PACKAGES = (
    "python==3.10.*, mlflow==2.*, mlserver, mlserver-mlflow, numpy==1.*, pandas==2.*, "
    "scipy==1.*, scikit-learn==1.*, xgboost==2.*, lightgbm==4.*, cloudpickle==3.*, psutil"
)

# Build tools MLflow lists in python_env.yaml; the image's versions do not matter.
_IGNORED = {"pip", "setuptools", "wheel"}


@dataclass(frozen=True)
class Provided:
    name: str  # canonical name
    version: str | None  # "1.2.3", "1.*" or None (any)

    def specifier(self):
        from packaging.specifiers import SpecifierSet

        return SpecifierSet(f"=={self.version}") if self.version else SpecifierSet()


def parse_provided(text: str) -> dict[str, Provided]:
    """Entries separated by commas or new lines; ``#`` comments and pip options are ignored."""
    from packaging.utils import canonicalize_name

    provided: dict[str, Provided] = {}
    for raw in text.replace(",", "\n").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        if " @ " in line:  # `pip freeze` of a direct URL install: present, version unknown
            line = line.split(" @ ", 1)[0]
        name, sep, version = line.partition("==")
        name, version = name.strip(), version.strip()
        if not name or (sep and not version) or any(c in name for c in "<>=!~ ;@"):
            raise ValueError(f"{line!r} is not NAME, NAME==VERSION or NAME==SERIES.*")
        provided[canonicalize_name(name)] = Provided(canonicalize_name(name), version or None)
    return provided


def requirement_lines(text: str) -> list[str]:
    """The requirement lines of a requirements.txt (no comments, options, URLs or paths)."""
    lines = []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-")) or "://" in line or line.startswith((".", "/")):
            continue
        lines.append(line)
    return lines


def check_requirements(requirements: str, provided: dict[str, Provided]) -> list[str]:
    """One line per requirement the runtime image does not satisfy."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import InvalidVersion, Version

    problems = []
    for line in requirement_lines(requirements):
        try:
            req = Requirement(line)
        except InvalidRequirement:
            problems.append(f"cannot read requirement {line!r}")
            continue
        name = canonicalize_name(req.name)
        if name in _IGNORED or (
            req.marker is not None and not _marker_applies(req.marker, provided)
        ):
            continue
        have = provided.get(name)
        if have is None:
            problems.append(f"needs {line}, which the runtime image does not provide")
            continue
        if not req.specifier or have.version is None:
            continue
        if not have.version.endswith("*"):
            try:
                ok = req.specifier.contains(Version(have.version), prereleases=True)
            except InvalidVersion:
                ok = True
        else:
            pins = [
                s.version
                for s in req.specifier
                if s.operator in ("==", "===") and "*" not in s.version
            ]
            ok = all(have.specifier().contains(p, prereleases=True) for p in pins)
        if not ok:
            problems.append(f"needs {line}, the runtime image has {have.name}=={have.version}")
    return problems


def _marker_applies(marker, provided: dict[str, Provided]) -> bool:
    python = provided.get("python")
    env = {}
    if python and python.version:
        series = python.version.rstrip(".*")
        env = {"python_version": ".".join(series.split(".")[:2]), "python_full_version": series}
    try:
        return bool(marker.evaluate(env))
    except Exception:  # noqa: BLE001 - an unknown marker: check the requirement anyway
        return True


def check_python_env(python_env: str, provided: dict[str, Provided]) -> list[str]:
    """Compare the ``python:`` of python_env.yaml with the image's interpreter (major.minor)."""
    try:
        spec = yaml.safe_load(python_env) or {}
    except yaml.YAMLError:
        return ["python_env.yaml is not valid YAML"]
    wanted = str(spec.get("python", "")).strip() if isinstance(spec, dict) else ""
    have = provided.get("python")
    if not wanted or have is None or have.version is None:
        return []
    want_mm = ".".join(wanted.split(".")[:2])
    have_mm = ".".join(have.version.rstrip(".*").split(".")[:2])
    if want_mm != have_mm:
        return [f"was logged with Python {wanted}, the runtime image has Python {have.version}"]
    return []


# The files of a model version whose content the runtime-fit check reads.
NEEDS_FILES = ("requirements.txt", "python_env.yaml")


@dataclass(frozen=True)
class ModelNeeds:
    """What a model version asks of its runtime, as its files say (kept in the marker,
    so a re-sync checks the fit without reading them again)."""

    mlflow_version: str | None = None
    requirements: str | None = None  # requirements.txt, if the model has one
    python_env: str | None = None  # python_env.yaml, if the model has one

    @classmethod
    def from_files(cls, mlmodel: bytes | None, files: dict[str, bytes | None]) -> ModelNeeds:
        def text(name: str) -> str | None:
            data = files.get(name)
            return None if data is None else data.decode("utf-8", "replace")

        return cls(mlflow_version(mlmodel), text("requirements.txt"), text("python_env.yaml"))

    @classmethod
    def from_record(cls, record: object) -> ModelNeeds | None:
        """Read back what a marker recorded; fields a later version may add are ignored."""
        if not isinstance(record, dict):
            return None
        known = {k: v for k, v in record.items() if k in cls.__dataclass_fields__}
        if not all(v is None or isinstance(v, str) for v in known.values()):
            return None
        return cls(**known)

    @property
    def mlflow_major(self) -> str | None:
        return (self.mlflow_version or "").split(".")[0] or None

    def problems(self, provided: dict[str, Provided]) -> list[str]:
        """Everything the runtime image described by ``provided`` lacks."""
        if not provided:
            return []
        found = []
        if self.requirements is not None:
            found += check_requirements(self.requirements, provided)
        if self.python_env is not None:
            found += check_python_env(self.python_env, provided)
        return found


def mlflow_version(mlmodel: bytes | str | None) -> str | None:
    """The MLflow version an MLmodel file was written by, if it says."""
    if not mlmodel:
        return None
    try:
        spec = yaml.safe_load(mlmodel) or {}
    except yaml.YAMLError:
        return None
    version = str(spec.get("mlflow_version", "")).strip() if isinstance(spec, dict) else ""
    return version or None


def model_format_version(major: str | None, supported: tuple[str, ...]) -> str | None:
    """The ``modelFormat.version`` to emit: the model's major MLflow version, only if a
    runtime lists it; otherwise None (KServe then matches runtimes by format name only)."""
    return major if major and major in supported else None


# KServe's S3 storage initializer skips every 0-byte object when it downloads a model
# (kserve/kserve python/storage/kserve_storage/kserve_storage.py, `obj.size == 0`), so a
# model with an empty file is served without it: an empty `__init__.py` in code/ or an
# empty vocabulary changes what the model does once served.
def empty_files(files) -> list[str]:
    """Paths of the 0-byte files among ``files`` (objects with ``path`` and ``size``)."""
    return sorted(f.path for f in files if f.size == 0)


def empty_file_problems(paths: list[str]) -> list[str]:
    return [
        f"{p} is empty (0 bytes); KServe's storage initializer skips 0-byte files, "
        "so the served model would not have it"
        for p in paths
    ]
