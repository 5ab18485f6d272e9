"""Shared names have one home (bridge/keys.py): writers and readers agree by construction."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from types import SimpleNamespace

import bridge
from bridge import keys
from bridge.kfp_run import KfpLineage
from bridge.status import _lineage

PACKAGE = Path(bridge.__file__).parent
_SHARED = re.compile(
    r"^(kfp\.[a-z_]+|bridge\.[a-z][a-z_.-]*|mlflow-kubeflow-bridge\.io/.*"
    r"|app\.kubernetes\.io/(managed-by|part-of))$"
)


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            if isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def test_no_product_module_spells_a_shared_key():
    """A tag, annotation or marker key written as a literal outside bridge/keys.py is how the
    KFP lineage tag came to be written as ``kfp.run_id`` and read as ``kfp.pipeline_run_id``."""
    modules = {f"bridge.{p.stem}" for p in PACKAGE.glob("*.py")}
    found = []
    for path in sorted(PACKAGE.glob("*.py")):
        if path.name == "keys.py":
            continue
        tree = ast.parse(path.read_text())
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Constant) or not isinstance(node.value, str):
                continue
            if id(node) in docs or node.value in modules:
                continue
            if _SHARED.match(node.value) or node.value == keys.MARKER_NAME:
                found.append(f"{path.name}:{node.lineno}: {node.value!r}")
    assert not found, "use bridge.keys instead of literals:\n" + "\n".join(found)


def test_status_reads_the_lineage_the_components_write():
    written = KfpLineage.resolve(
        pipeline_name="churn", run_id="0f1e-run", task_name="train-and-log", env={}
    ).tags()
    run = SimpleNamespace(
        experiment_id="1", run_name="r", status="FINISHED", tags={"mlflow.user": "x", **written}
    )
    lineage = _lineage("abc", {"abc": run})
    assert lineage.kfp_pipeline_run_id == "0f1e-run"
    assert lineage.kfp_pipeline_name == "churn"
    assert lineage.kfp_task_name == "train-and-log"
