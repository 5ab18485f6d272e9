"""Does a model's requirements.txt / python_env.yaml fit the runtime image?"""

from __future__ import annotations

import pytest

from bridge.runtime_fit import (
    DEFAULT_RUNTIME_PACKAGES,
    ModelNeeds,
    check_python_env,
    check_requirements,
    mlflow_version,
    model_format_version,
    parse_provided,
)

IMAGE = parse_provided(
    """
    # pip freeze of a runtime image
    python==3.10.14
    mlflow==2.19.0
    scikit-learn==1.5.2
    numpy==1.*
    Pandas
    """
)

# What mlflow.sklearn.log_model writes (MLflow 3, newer scikit-learn).
REQUIREMENTS = """mlflow==3.1.0
cloudpickle==3.1.1
numpy==1.26.4
pandas==2.2.3
scikit-learn==1.7.2
"""


def test_default_profile_parses():
    provided = parse_provided(DEFAULT_RUNTIME_PACKAGES)
    assert provided["mlflow"].version == "2.*" and provided["python"].version == "3.10.*"


def test_mismatches_are_listed_one_by_one():
    problems = check_requirements(REQUIREMENTS, IMAGE)
    assert problems == [
        "needs mlflow==3.1.0, the runtime image has mlflow==2.19.0",
        "needs cloudpickle==3.1.1, which the runtime image does not provide",
        "needs scikit-learn==1.7.2, the runtime image has scikit-learn==1.5.2",
    ]


def test_fitting_requirements_pass():
    text = "mlflow<3,>=2.10\nscikit-learn==1.5.2\nnumpy==1.26.4\npandas\n# comment\n-r other.txt\n"
    assert check_requirements(text, IMAGE) == []


def test_series_entries_check_pins():
    assert check_requirements("numpy==2.1.0\n", IMAGE) == [
        "needs numpy==2.1.0, the runtime image has numpy==1.*"
    ]
    assert check_requirements("numpy>=1.20\n", IMAGE) == []  # a range: presence only


def test_markers_follow_the_image_python():
    assert check_requirements('tomli==2.0.1; python_version < "3.11"\n', IMAGE) != []
    assert check_requirements('tomli==2.0.1; python_version >= "3.11"\n', IMAGE) == []


def test_python_env():
    env = "python: 3.11.9\nbuild_dependencies:\n- pip==24.0\ndependencies:\n- -r requirements.txt\n"
    assert check_python_env(env, IMAGE) == [
        "was logged with Python 3.11.9, the runtime image has Python 3.10.14"
    ]
    assert check_python_env("python: 3.10.1\n", IMAGE) == []


@pytest.mark.parametrize("bad", ["numpy>=1", "==1.0", "numpy==", "a b"])
def test_bad_profile_entries(bad):
    with pytest.raises(ValueError):
        parse_provided(bad)


def mlflow_major(mlmodel) -> str | None:
    return ModelNeeds(mlflow_version(mlmodel)).mlflow_major


def test_model_format_version_only_what_a_runtime_lists():
    assert mlflow_major("mlflow_version: 2.16.2\nflavors: {}\n") == "2"
    assert model_format_version("2", ("1", "2")) == "2"
    assert model_format_version(mlflow_major("mlflow_version: 3.1.0\n"), ("1", "2")) is None
    assert model_format_version(mlflow_major("flavors: {}\n"), ("1", "2")) is None
    assert model_format_version(mlflow_major(b": not yaml: ["), ("1", "2")) is None


def test_model_needs_from_files_and_their_problems():
    image = parse_provided("python==3.10.*, numpy==1.*")
    needs = ModelNeeds.from_files(
        b"mlflow_version: 3.17.2\nflavors: {}\n",
        {"requirements.txt": b"numpy==2.1.0\n", "python_env.yaml": b"python: 3.11.7\n"},
    )
    assert needs == ModelNeeds("3.17.2", "numpy==2.1.0\n", "python: 3.11.7\n")
    assert needs.mlflow_major == "3"
    problems = needs.problems(image)
    assert len(problems) == 2
    assert "numpy==2.1.0" in problems[0] and "Python 3.11.7" in problems[1]
    # nothing described about the image (runtime fit off): nothing to report
    assert needs.problems({}) == []
    # a model without those files asks for nothing
    assert ModelNeeds.from_files(None, {}).problems(image) == []


def test_empty_files_are_named():
    from bridge.publish import FileRecord
    from bridge.runtime_fit import empty_file_problems, empty_files

    files = [FileRecord("MLmodel", 120, "a"), FileRecord("code/pkg/__init__.py", 0, "b")]
    assert empty_files(files) == ["code/pkg/__init__.py"]
    [line] = empty_file_problems(empty_files(files))
    assert line.startswith("code/pkg/__init__.py is empty (0 bytes)")
    assert empty_files(files[:1]) == []
