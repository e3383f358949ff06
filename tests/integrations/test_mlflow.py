"""MLflow: an audit logged to a local SQLite store and to a real `mlflow server`, read back through the MLflow client."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

mlflow = pytest.importorskip("mlflow", reason='mlflow is not installed (pip install "auditor[mlflow]")')
from mlflow.tracking import MlflowClient


def artifact_paths(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def check_logged(client: MlflowClient, run_id: str, report, out: Path) -> None:
    """What the run holds equals what the audit found."""
    run = client.get_run(run_id)
    params, metrics = run.data.params, run.data.metrics
    assert params["auditor.gaps.min_k"] == "5" and params["auditor.seed"] == "0"
    assert params["auditor.tuning.epochs"] == "20" and params["auditor.report.mlflow.experiment"] == "auditor"
    gap = report.gaps[0]
    assert metrics["audit.gap.object"] == pytest.approx(gap.gap)
    assert metrics["audit.gap_ci_low.object"] == pytest.approx(gap.ci_low)
    assert metrics["audit.gap_ci_high.object"] == pytest.approx(gap.ci_high)
    assert metrics["audit.max_gap"] == pytest.approx(max(g.gap for g in report.gaps.values() if math.isfinite(g.gap)))
    assert metrics["audit.n_spurious_features"] == sum(len(report.spurious_features(c)) for c in range(2)) >= 1
    tuning = report.tuning["low_spuriosity"]
    assert metrics["audit.accuracy_before"] == pytest.approx(tuning.before["accuracy"])
    assert metrics["audit.accuracy_after"] == pytest.approx(tuning.after["accuracy"])
    results = json.loads((out / "results.json").read_text())
    assert metrics["audit.gate_passed"] == (1.0 if results["gate"]["passed"] else 0.0)
    assert run.data.tags["auditor.gate"] == results["gate"]["reason"]
    paths = artifact_paths(client, run_id)
    assert {"auditor/results.json", "auditor/report.html"} <= paths
    evidence = {p.relative_to(out).as_posix() for p in (out / "artifacts").rglob("*") if p.is_file()}
    assert evidence and {f"auditor/{p}" for p in evidence} <= paths
    local = client.download_artifacts(run_id, "auditor/results.json", str(out.parent / f"dl-{run_id}"))
    assert json.loads(Path(local).read_text()) == results


def check_model(run_id: str, report) -> None:
    """The tuned model logged with mlflow.pytorch loads back with the tuned head."""
    experiment_id = mlflow.get_run(run_id).info.experiment_id
    models = [m for m in mlflow.search_logged_models(experiment_ids=[experiment_id], output_format="list")
              if m.source_run_id == run_id]
    assert [m.name for m in models] == ["tuned_model"]
    loaded = mlflow.pytorch.load_model(models[0].model_uri)
    tuned = report.tuned_model
    assert torch.equal(loaded.fc.weight, tuned.fc.weight) and torch.equal(loaded.fc.bias, tuned.fc.bias)


def test_log_to_a_local_sqlite_store_and_read_it_back(audited, tmp_path, monkeypatch):
    report, out = audited
    monkeypatch.chdir(tmp_path)  # a SQLite store keeps artifacts in ./mlruns
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = report.log_to_mlflow(tracking_uri=uri, output_dir=out, run_name="audit-1")
    client = MlflowClient(uri)
    assert client.get_run(run_id).info.run_name == "audit-1"
    assert client.get_experiment(client.get_run(run_id).info.experiment_id).name == "auditor"
    check_logged(client, run_id, report, out)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        check_model(run_id, report)
    finally:
        mlflow.set_tracking_uri(previous)


def test_default_store_is_a_local_sqlite_file(audited, tmp_path, monkeypatch):
    report, _out = audited
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run_id = report.log_to_mlflow(log_model=False)  # no output_dir: the outputs are written to a temporary folder
    assert (tmp_path / "mlflow.db").is_file()
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.get_run(run_id).data.metrics["audit.gap.object"] == pytest.approx(report.gaps[0].gap)
    assert {"auditor/results.json", "auditor/report.html"} <= artifact_paths(client, run_id)


def test_nested_active_and_existing_runs(audited, tmp_path, monkeypatch):
    report, out = audited
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        mlflow.set_experiment("training")
        with mlflow.start_run(run_name="train") as parent:
            mlflow.log_param("seed", 123)  # the pipeline's own param: the audit's `auditor.seed` cannot clash with it
            child = report.log_to_mlflow(output_dir=out, log_model=False)
            same = report.log_to_mlflow(output_dir=out, log_model=False, nested=False)
            assert mlflow.active_run().info.run_id == parent.info.run_id  # the pipeline's run stays active
        with mlflow.start_run(run_name="earlier") as earlier:
            pass
        resumed = report.log_to_mlflow(run=earlier.info.run_id, output_dir=out, log_model=False)
        client = MlflowClient(uri)
        assert same == parent.info.run_id and child != parent.info.run_id and resumed == earlier.info.run_id
        child_run = client.get_run(child)
        assert child_run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child_run.info.experiment_id == parent.info.experiment_id
        parent_run = client.get_run(parent.info.run_id)
        assert parent_run.data.params["seed"] == "123" and parent_run.data.params["auditor.gaps.min_k"] == "5"
        assert "audit.max_gap" in parent_run.data.metrics
        assert client.get_run(earlier.info.run_id).data.metrics["audit.gap.object"] == pytest.approx(report.gaps[0].gap)
        assert mlflow.active_run() is None
    finally:
        mlflow.set_tracking_uri(previous)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` on a free localhost port (SQLite backend, served artifacts), stopped after the test."""
    port = free_port()
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 - the server writes to it until teardown closes it
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
               "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}", "--artifacts-destination", str(tmp_path / "served")]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                pytest.fail(f"mlflow server exited with {process.returncode}: {(tmp_path / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not answer in 180 s: {(tmp_path / 'server.log').read_text()[-2000:]}")
            time.sleep(1)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


@pytest.mark.slow
def test_log_to_a_real_mlflow_server(audited, mlflow_server, tmp_path):
    report, out = audited
    run_id = report.log_to_mlflow(tracking_uri=mlflow_server, output_dir=out, experiment="ci-audits")
    client = MlflowClient(mlflow_server)
    assert client.get_experiment(client.get_run(run_id).info.experiment_id).name == "ci-audits"
    check_logged(client, run_id, report, out)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(mlflow_server)
    try:
        check_model(run_id, report)
    finally:
        mlflow.set_tracking_uri(previous)
    assert mlflow.get_tracking_uri() == previous  # the caller's tracking URI is left as it was



def test_report_without_model_logs_everything_but_the_model(audited, tmp_path, caplog, monkeypatch):
    from auditor.report.audit_report import AuditReport

    report, out = audited
    monkeypatch.chdir(tmp_path)
    loaded = AuditReport.load(out)
    np.testing.assert_array_equal(loaded.predictions["train"], report.predictions["train"])
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = loaded.log_to_mlflow(tracking_uri=uri, output_dir=out)
    assert "no model" in caplog.text
    client = MlflowClient(uri)
    assert client.get_run(run_id).data.metrics["audit.gap.object"] == pytest.approx(report.gaps[0].gap)
