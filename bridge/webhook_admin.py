"""Create or update the MLflow webhook that calls the daemon (MLflow edge, like registry.py)."""

from __future__ import annotations

from bridge.registry import configure_mlflow_client, mlflow_errors
from bridge.settings import Settings
from bridge.webhook import EVENTS


def register_webhook(settings: Settings, name: str, url: str, secret: str) -> tuple[str, bool]:
    """(webhook id, created?) — the webhook named ``name`` is made to match, idempotently."""
    configure_mlflow_client(settings)
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.registry_uri)
    events = sorted(EVENTS)
    with mlflow_errors("registering the webhook", settings.tracking_uri):
        existing = None
        token = None
        while existing is None:
            page = client.list_webhooks(max_results=100, page_token=token)
            existing = next((w for w in page if w.name == name), None)
            token = page.token
            if not token:
                break
        if existing is None:
            hook = client.create_webhook(
                name=name,
                url=url,
                events=events,
                description="mlflow-kubeflow-bridge sync daemon",
                secret=secret,
                status="ACTIVE",
            )
            return hook.webhook_id, True
        client.update_webhook(
            existing.webhook_id, url=url, events=events, secret=secret, status="ACTIVE"
        )
        return existing.webhook_id, False
