"""The smoke gate of `bridge promote --smoke`: load the version and predict, in a child process.

The parent (:func:`smoke_gate`) starts the child (:func:`smoke_child`) in a new session and
kills the whole group at BRIDGE_PROMOTE_SMOKE_TIMEOUT, so a model that hangs, crashes the
interpreter or starts its own processes cannot take the promotion with it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from bridge import gates as g
from bridge.registry import ModelVersionInfo, schema_error
from bridge.settings import Settings

SMOKE_CHILD = (
    "import sys; from bridge.smoke import smoke_child; sys.exit(smoke_child(sys.argv[1:]))"
)


def smoke_gate(settings: Settings, info: ModelVersionInfo) -> g.GateResult:
    """Load and predict in a child process, killed (with its children) on timeout."""
    name = "smoke"
    timeout = settings.promote_smoke_timeout
    env = dict(os.environ)
    env["MLFLOW_TRACKING_URI"] = settings.tracking_uri or ""
    if settings.registry_uri:
        env["MLFLOW_REGISTRY_URI"] = settings.registry_uri
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-c", SMOKE_CHILD, info.download_uri],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return g.failed(
            name,
            f"no prediction within {timeout:g}s (BRIDGE_PROMOTE_SMOKE_TIMEOUT); the model was killed",
        )
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        lines = [ln for ln in err.splitlines() if ln.strip()]
        why = lines[-1] if lines else f"exit code {proc.returncode}"
        return g.failed(name, f"loading or predicting failed: {why}")
    try:
        report = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        report = {}
    return g.passed(
        name,
        f"loaded with pyfunc and predicted on the input example in {elapsed:.1f}s "
        f"(output {report.get('prediction_type', '?')} {report.get('shape', '')})",
    )


def smoke_child(argv: list[str]) -> int:
    """Child process of the smoke gate: load MODEL_URI with pyfunc, predict on its example.

    Run as ``python -c 'from bridge.smoke import smoke_child ...' MODEL_URI`` so a
    model that hangs or crashes the interpreter cannot take the caller with it.
    Prints one JSON line on success; one error line on stderr and exit 1 otherwise.
    """
    import mlflow
    from mlflow.models.utils import _validate_serving_input

    [model_uri] = argv
    tmp = tempfile.mkdtemp(prefix="bridge-smoke-")
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp)
        meta = mlflow.models.Model.load(local)
        example = (meta.saved_input_example_info or {}).get("serving_input_path")
        if not example:
            print("the model has no serving input example to predict on", file=sys.stderr)
            return 1
        with open(os.path.join(local, example), encoding="utf-8") as fh:
            serving_input = fh.read()
        prediction = _validate_serving_input(local, serving_input)
    except Exception as exc:  # noqa: BLE001 - the child reports any failure as one line
        print(f"{type(exc).__name__}: {schema_error(exc)}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    shape = getattr(prediction, "shape", None)
    size = (
        list(shape)
        if shape is not None
        else (len(prediction) if hasattr(prediction, "__len__") else 1)
    )
    print(json.dumps({"prediction_type": type(prediction).__name__, "shape": size}))
    return 0
