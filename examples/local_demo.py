"""`make demo`: the main job end to end on the embedded local stack.

1. start a real MLflow server (sqlite) and a local S3 server (`bridge dev up`)
2. train a small scikit-learn model on data shipped with scikit-learn, log and
   register two versions, point the `champion` alias at version 2
3. run one `bridge sync --once` (the real command line)
4. prove it: KServe's own storage initializer (`kserve-storage`) downloads the
   manifest's storageUri, mlflow.pyfunc loads that copy, and its predictions on
   the model's input example equal those of the registry model
The stack is stopped on exit, on failure and on Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "demo-output"
MODEL = "iris-classifier"


def step(msg: str) -> None:
    print(f"==> {msg}", flush=True)


def main() -> int:
    from bridge import devstack

    main_pid = os.getpid()

    def on_sigterm(*_):
        # Forked helpers (kserve-storage's download pool) inherit this handler.
        if os.getpid() == main_pid:
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    state_dir = OUT / "stack"
    devstack.down(state_dir)  # leftovers of an interrupted run
    step("starting MLflow (sqlite backend, artifacts in S3) and the S3 server")
    started = time.monotonic()
    stack, _ = devstack.up(state_dir)
    try:
        os.environ.update(stack.env())
        print(
            f"    MLflow UI: {stack.mlflow_url}   S3: {stack.s3_url}   ({time.monotonic() - started:.1f}s)"
        )
        return run_demo(stack)
    except KeyboardInterrupt:
        print("interrupted; stopping the stack", file=sys.stderr)
        return 130
    finally:
        devstack.down(state_dir)
        step("stopped the local stack")


def run_demo(stack) -> int:
    import mlflow
    import sklearn
    import yaml
    from mlflow import MlflowClient
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    step(f"training and registering two versions of {MODEL!r}")
    mlflow.set_tracking_uri(stack.mlflow_url)
    mlflow.set_experiment("bridge-demo")
    X, y = load_iris(return_X_y=True, as_frame=True)
    for c in (0.05, 1.0):
        with mlflow.start_run(run_name=f"logreg-C{c}"):
            model = LogisticRegression(C=c, max_iter=300).fit(X, y)
            mlflow.log_param("C", c)
            mlflow.log_metric("accuracy", float(model.score(X, y)))
            info = mlflow.sklearn.log_model(
                model,
                name="model",
                registered_model_name=MODEL,
                input_example=X.iloc[::25],  # rows of all three classes
                pip_requirements=[
                    f"scikit-learn=={sklearn.__version__}",
                    f"mlflow=={mlflow.__version__}",
                ],
            )
            print(f"    version {info.registered_model_version}: C={c}, source {info.model_uri}")
    client = MlflowClient()
    client.set_registered_model_alias(MODEL, "champion", "2")
    print("    alias champion -> version 2")

    step("bridge sync --once")
    manifests = OUT / "manifests"
    sync = subprocess.run(
        [sys.executable, "-m", "bridge", "sync", "--once", "--output-dir", str(manifests)],
        text=True,
        capture_output=True,
    )
    print("    " + (sync.stdout + sync.stderr).strip().replace("\n", "\n    "))
    if sync.returncode != 0:
        print(f"error: bridge sync failed with exit code {sync.returncode}", file=sys.stderr)
        return sync.returncode
    manifest, isvc = next(
        (p, doc)
        for p in sorted(manifests.glob("*.yaml"))
        if (doc := yaml.safe_load(p.read_text())).get("kind") == "InferenceService"
    )
    storage_uri = isvc["spec"]["predictor"]["model"]["storageUri"]
    digest = isvc["metadata"]["annotations"]["mlflow-kubeflow-bridge.io/content-digest"]

    step(f"kserve-storage downloads {storage_uri}")
    local = Path(tempfile.mkdtemp(prefix="bridge-demo-kserve-"))
    # A fresh process, as in KServe's storage-initializer container (its download
    # pool forks, which is unsafe from a process that already runs threads).
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from kserve_storage import Storage; Storage.download(*sys.argv[1:])",
            storage_uri,
            str(local),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    print(f"    downloaded: {', '.join(sorted(p.name for p in local.iterdir()))}")

    step("mlflow.pyfunc loads that copy; comparing predictions with the registry model")
    from mlflow.models import Model

    example = Model.load(str(local)).load_input_example(str(local))
    served = mlflow.pyfunc.load_model(str(local)).predict(example)
    registry = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion").predict(example)
    equal = list(map(int, served)) == list(map(int, registry))
    print(f"    served copy:    {list(map(int, served))}")
    print(f"    registry model: {list(map(int, registry))}")

    print()
    print(f"manifest:      {manifest}")
    print(f"storageUri:    {storage_uri}")
    print(f"content:       {digest}")
    print(f"kserve copy:   {local}")
    print(f"verification:  {'OK - predictions match' if equal else 'FAILED - predictions differ'}")
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
