import pytest

from bridge.errors import UsageError
from bridge.settings import Settings, load_settings


def test_defaults():
    s = load_settings({}, env={})
    assert (s.alias, s.canary_alias, s.namespace) == ("champion", "challenger", "default")
    assert s.tracking_uri is None and s.target_uri is None


def test_precedence_flags_over_env_over_file_over_defaults(tmp_path):
    cfg = tmp_path / "bridge.toml"
    cfg.write_text(
        'alias = "from-file"\nnamespace = "file-ns"\ncanary_alias = "file-canary"\npoll_interval = 7\n'
    )
    env = {"BRIDGE_ALIAS": "from-env", "BRIDGE_NAMESPACE": "env-ns", "BRIDGE_CONFIG": str(cfg)}
    s = load_settings({"alias": "from-flag"}, env=env)
    assert s.alias == "from-flag"  # flag beats env and file
    assert s.namespace == "env-ns"  # env beats file
    assert s.canary_alias == "file-canary"  # file beats default
    assert s.poll_interval == 7.0  # parsed from the file's integer
    assert s.service_account == "mlflow-bridge-models"  # default


def test_none_flag_does_not_override_env():
    s = load_settings({"alias": None}, env={"BRIDGE_ALIAS": "prod"})
    assert s.alias == "prod"


def test_config_file_table_and_explicit_path(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[bridge]\ntarget_uri = "s3://models/prod"\n')
    s = load_settings({}, env={}, config_file=cfg)
    assert (s.target_bucket, s.target_prefix) == ("models", "prod/")


def test_standard_variables_are_honoured():
    env = {
        "MLFLOW_TRACKING_URI": "http://mlflow:5000",
        "AWS_ENDPOINT_URL": "http://minio:9000",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }
    s = load_settings({}, env=env)
    assert s.tracking_uri == "http://mlflow:5000"
    assert s.target_endpoint_url == "http://minio:9000"
    assert s.target_region == "eu-west-1"
    # bridge's own variable wins over the AWS-wide one
    s = load_settings({}, env={**env, "BRIDGE_TARGET_ENDPOINT_URL": "http://other:9000"})
    assert s.target_endpoint_url == "http://other:9000"


@pytest.mark.parametrize(
    "flags, fragment",
    [
        ({"target_uri": "gs://bucket/x"}, "s3://bucket"),
        ({"target_uri": "s3://"}, "s3://bucket"),
        ({"alias": "bad alias!"}, "not a valid MLflow alias"),
        ({"alias": "v3"}, "not a valid MLflow alias"),
        ({"alias": "x", "canary_alias": "x"}, "must differ"),
        ({"namespace": "Prod_NS"}, "namespace"),
        ({"log_format": "xml"}, "log format"),
        ({"poll_interval": "-1"}, "poll_interval"),
        ({"mlflow_max_retries": "many"}, "mlflow_max_retries"),
    ],
)
def test_bad_values_are_usage_errors(flags, fragment):
    with pytest.raises(UsageError) as err:
        load_settings(flags, env={})
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_key_in_config_file(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('alais = "typo"\n')
    with pytest.raises(UsageError, match="unknown setting.*alais"):
        load_settings({}, env={}, config_file=cfg)


def test_missing_and_broken_config_file(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        load_settings({}, env={}, config_file=tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("alias = \n")
    with pytest.raises(UsageError, match="not valid TOML"):
        load_settings({}, env={}, config_file=bad)


def test_require_names_the_variable():
    s = load_settings({}, env={})
    with pytest.raises(UsageError, match="BRIDGE_TARGET_URI"):
        s.require("target_uri")


def test_every_setting_is_documented():
    for row in Settings().describe():
        assert row["env"] and row["help"], row


def test_stage_setting_is_canonical_and_checked():
    from bridge.settings import load_settings

    assert load_settings(env={"BRIDGE_STAGE": "production"}).stage == "Production"
    assert load_settings(env={}).stage is None
    with pytest.raises(UsageError, match="expected Staging or Production"):
        load_settings(env={"BRIDGE_STAGE": "Archived"})
