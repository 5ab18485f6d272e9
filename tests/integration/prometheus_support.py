"""A real Prometheus server scraping a local exporter of KServe-shaped request series.

The exporter serves what Knative's queue-proxy exports for every revision of a
KServe predictor (knative/docs docs/serving/metrics.md, "Queue proxy"):
``revision_app_request_count`` (counter) and ``revision_app_request_latencies``
(histogram in milliseconds) with the labels ``namespace_name``,
``configuration_name`` (``<isvc>-predictor``), ``revision_name``, ``pod_name``,
``container_name``, ``service_name``, ``response_code`` and ``response_code_class``.
Each revision has a profile (requests per second, error ratio, latency) that a
test can change while Prometheus scrapes it every second.

Prometheus is Debian's ``prometheus`` package (``/usr/bin/prometheus``); where it is
missing the tests skip and say how to install it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

INSTALL_HINT = "apt-get install -y prometheus (or put a prometheus binary on PATH)"
# Knative's default request-latency buckets start like these (milliseconds).
BUCKETS = (5, 10, 20, 40, 60, 80, 100, 150, 200, 250, 300, 400, 500, 1000, 2000, 5000)


@dataclass
class Profile:
    rps: float
    error_ratio: float = 0.0
    latency_ms: float = 50.0
    ok: float = 0.0  # counters so far
    errors: float = 0.0


class Exporter:
    def __init__(self):
        self.lock = threading.Lock()
        self.profiles: dict[tuple[str, str, str], Profile] = {}
        self.last = time.monotonic()
        # always present, so the metric names exist before any test's series do
        self.set("bridge-test", "baseline", "baseline-predictor-00001", rps=1)

    def set(self, namespace: str, isvc: str, revision: str, **profile) -> None:
        with self.lock:
            self._advance()
            key = (namespace, isvc, revision)
            p = self.profiles.get(key)
            if p is None:
                self.profiles[key] = Profile(**profile)
            else:
                for k, v in profile.items():
                    setattr(p, k, v)

    def _advance(self) -> None:
        now = time.monotonic()
        dt, self.last = now - self.last, now
        for p in self.profiles.values():
            p.errors += p.rps * dt * p.error_ratio
            p.ok += p.rps * dt * (1 - p.error_ratio)

    def text(self) -> str:
        with self.lock:
            self._advance()
            lines = [
                "# TYPE revision_app_request_count counter",
                "# TYPE revision_app_request_latencies histogram",
            ]
            for (ns, isvc, rev), p in self.profiles.items():
                base = (
                    f'namespace_name="{ns}",configuration_name="{isvc}-predictor",'
                    f'revision_name="{rev}",service_name="{isvc}-predictor",'
                    f'pod_name="{rev}-deployment-0",container_name="queue-proxy"'
                )
                for code, cls, n in (("200", "2xx", p.ok), ("500", "5xx", p.errors)):
                    labels = f'{base},response_code="{code}",response_code_class="{cls}"'
                    lines.append(f"revision_app_request_count{{{labels}}} {int(n)}")
                    for le in BUCKETS:
                        count = int(n) if le >= p.latency_ms else 0
                        lines.append(
                            f'revision_app_request_latencies_bucket{{{labels},le="{le}"}} {count}'
                        )
                    lines.append(
                        f'revision_app_request_latencies_bucket{{{labels},le="+Inf"}} {int(n)}'
                    )
                    lines.append(
                        f"revision_app_request_latencies_sum{{{labels}}} {n * p.latency_ms:.1f}"
                    )
                    lines.append(f"revision_app_request_latencies_count{{{labels}}} {int(n)}")
            return "\n".join(lines) + "\n"

    def serve(self) -> ThreadingHTTPServer:
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                body = exporter.text().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def exporter():
    exp = Exporter()
    server = exp.serve()
    exp.port = server.server_address[1]
    yield exp
    server.shutdown()


def prometheus_binary() -> str | None:
    found = shutil.which("prometheus")
    return found or ("/usr/bin/prometheus" if os.path.exists("/usr/bin/prometheus") else None)


def start_prometheus(
    binary: str, exporter_port: int, d: Path, rules: str | None = None
) -> tuple[subprocess.Popen, str]:
    """A real Prometheus scraping ``127.0.0.1:exporter_port`` every second; (process, URL).

    ``rules``: the text of a rule file, evaluated every second as well.
    """
    rule_files = ""
    if rules is not None:
        (d / "rules.yml").write_text(rules)
        rule_files = f"rule_files:\n  - {d / 'rules.yml'}\n"
    (d / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        + rule_files
        + "scrape_configs:\n  - job_name: queue-proxy\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{exporter_port}']\n"
    )
    port = _free_port()
    with open(d / "prometheus.log", "w") as log:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={d / 'prometheus.yml'}",
                f"--storage.tsdb.path={d / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            names = requests.get(f"{url}/api/v1/label/__name__/values", timeout=2).json()["data"]
            if "revision_app_request_count" in names:
                return proc, url
        except (requests.RequestException, ValueError, KeyError):
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"prometheus did not come up; see {d / 'prometheus.log'}")
        time.sleep(0.3)


@pytest.fixture(scope="session")
def prometheus(exporter, tmp_path_factory):
    """URL of a real Prometheus scraping ``exporter`` every second."""
    binary = prometheus_binary()
    if not binary:
        pytest.skip(f"no prometheus binary; install it with: {INSTALL_HINT}")
    proc, url = start_prometheus(binary, exporter.port, tmp_path_factory.mktemp("prometheus"))
    yield url
    proc.terminate()
    proc.wait(timeout=30)
