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


def test_files_equal_to_the_rendering_are_owned_without_parsing(tmp_path, monkeypatch):
    import bridge.gitops as gitops

    selects = "kind: NetworkPolicy\nspec:\n  podSelector:\n    matchLabels:\n"
    selects += "      app.kubernetes.io/managed-by: mlflow-kubeflow-bridge\n"
    files = {
        "same.yaml": OWNED + "# same\n",
        "edited.yaml": OWNED + "# edited by hand\n",
        "policy.yaml": selects,  # names the label, is not bridge's
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    parsed = []
    real = gitops._is_owned
    monkeypatch.setattr(gitops, "_is_owned", lambda text: parsed.append(text) or real(text))
    rendered = {"same.yaml": files["same.yaml"], "edited.yaml": OWNED + "# edited\n"}

    owned = OutputDir(tmp_path).owned_files(rendered=rendered)
    assert set(owned) == {"same.yaml", "edited.yaml"}
    assert set(parsed) == {files["edited.yaml"], files["policy.yaml"]}  # not "same.yaml"
    assert owned == OutputDir(tmp_path).owned_files()
