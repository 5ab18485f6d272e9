import yaml

from bridge.gitops import OutputDir

OWNED = "metadata:\n  labels:\n    app.kubernetes.io/managed-by: mlflow-kubeflow-bridge\n"


def test_reconcile_writes_removes_and_keeps_foreign_files(tmp_path):
    out = OutputDir(tmp_path)
    (tmp_path / "mine.yaml").write_text("kind: ConfigMap\n")
    change = out.reconcile({"a.yaml": OWNED + "# a\n", "b.yaml": OWNED + "# b\n"}, lambda n: True)
    assert change.written == ["a.yaml", "b.yaml", "kustomization.yaml"]
    mtime = (tmp_path / "a.yaml").stat().st_mtime_ns

    change = out.reconcile({"a.yaml": OWNED + "# a\n"}, lambda n: True)
    assert change.removed == ["b.yaml"] and change.unchanged == ["a.yaml"]
    assert (tmp_path / "a.yaml").stat().st_mtime_ns == mtime
    assert (tmp_path / "mine.yaml").exists()
    assert yaml.safe_load((tmp_path / "kustomization.yaml").read_text())["resources"] == ["a.yaml"]
    assert (tmp_path / "a.yaml").stat().st_mode & 0o044  # readable by others (committed to Git)


def test_out_of_scope_files_survive(tmp_path):
    out = OutputDir(tmp_path)
    out.reconcile({"a.yaml": OWNED, "b.yaml": OWNED}, lambda n: True)
    change = out.reconcile({}, lambda n: n == "a.yaml")
    assert change.removed == ["a.yaml"]
    assert (tmp_path / "b.yaml").exists()


def test_user_kustomization_is_left_alone(tmp_path):
    (tmp_path / "kustomization.yaml").write_text("resources: [mine.yaml]\n")
    OutputDir(tmp_path).reconcile({"a.yaml": OWNED}, lambda n: True)
    assert (tmp_path / "kustomization.yaml").read_text() == "resources: [mine.yaml]\n"
