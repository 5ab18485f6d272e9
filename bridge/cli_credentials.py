"""`bridge credentials`: print the Secret KServe needs to read the target store.

The Secret is printed, never written to the GitOps directory: its values are real keys
only with ``--from-env``, and go to stdout only (pipe them to ``kubectl apply -f -`` or
a sealed-secrets tool).
"""

from __future__ import annotations

import json
import os

import click

from bridge.cli_common import Context, pass_ctx, target_options
from bridge.errors import UsageError

KEY_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


@click.command("credentials")
@click.option(
    "-n",
    "--namespace",
    required=True,
    metavar="NS",
    help="Namespace of the predictors (the Secret lives next to their ServiceAccount).",
)
@click.option(
    "-o",
    "--output",
    type=click.Choice(["yaml", "json"]),
    default="yaml",
    show_default=True,
    help="Format on stdout.",
)
@click.option(
    "--from-env",
    is_flag=True,
    help="Fill in the keys from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (default: placeholders).",
)
@target_options
@pass_ctx
def credentials(ctx: Context, namespace, output, from_env, **flags):
    """Print the Secret KServe needs to read the target store.

    It carries the S3 keys under the names KServe's credential config expects and
    the serving.kserve.io/s3-* annotations (endpoint, https, region, TLS check)
    that KServe's storage initializer reads from the Secret the predictors'
    ServiceAccount lists. Keys are placeholders unless --from-env.

    \b
    Example:
      bridge credentials -n models --from-env | kubectl apply -f -
      bridge credentials -n models | kubeseal -o yaml > sealed-s3.yaml
    """
    settings = ctx.settings(namespace=namespace, **flags)
    from bridge.serving import AccessKeys, credentials_secret, to_yaml
    from bridge.sync import serving_options

    if settings.serving_irsa_role_arn:
        raise UsageError(
            "no Secret is needed with IRSA (BRIDGE_SERVING_IRSA_ROLE_ARN is set): "
            "KServe reads the S3 settings from the ServiceAccount bridge emits",
            hint="unset BRIDGE_SERVING_IRSA_ROLE_ARN to use access keys",
        )
    keys = AccessKeys()
    if from_env:
        missing = [v for v in KEY_VARIABLES if not os.environ.get(v)]
        if missing:
            raise UsageError(
                f"--from-env: {' and '.join(missing)} not set",
                hint="export the keys, or drop --from-env for placeholders",
            )
        keys = AccessKeys(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])
    secret = credentials_secret(serving_options(settings), namespace, keys)
    if output == "json":
        click.echo(json.dumps(secret, indent=2, sort_keys=True))
    else:
        click.echo(to_yaml(secret), nl=False)
    return 0
