"""Without an integration's package the library names the pip extra and the CLI exits 2 (runs whether or not they are installed)."""

from __future__ import annotations

import sys

import pytest

from auditor.cli import main
from auditor.errors import MissingDependencyError
from auditor.integrations import require


@pytest.mark.parametrize("module", ["mlflow", "fiftyone"])
def test_require_names_the_extra(monkeypatch, module):
    monkeypatch.setitem(sys.modules, module, None)  # as if the package were not installed
    with pytest.raises(MissingDependencyError, match=rf'pip install "auditor\[{module}\]"'):
        require(module, module, "a test")


def test_audit_with_mlflow_but_without_the_package_exits_2_before_reading_anything(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mlflow", None)
    code = main(["audit", "--model", "tests.conftest:TwoChannelNet", "--data", "no-such-folder", "--mlflow"])
    err = capsys.readouterr().err
    assert code == 2 and 'pip install "auditor[mlflow]"' in err


def test_export_fiftyone_without_the_package_exits_2(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "fiftyone", None)
    code = main(["export", "fiftyone", str(tmp_path / "results.json"), "--name", "x"])
    assert code == 2 and 'pip install "auditor[fiftyone]"' in capsys.readouterr().err


def test_report_methods_without_the_packages_raise_with_the_pip_command(monkeypatch):
    from auditor.config import AuditConfig
    from auditor.report.audit_report import AuditReport

    report = AuditReport(class_names=["a"], config=AuditConfig(), important_features={}, verdicts=[], gaps={})
    monkeypatch.setitem(sys.modules, "mlflow", None)
    monkeypatch.setitem(sys.modules, "fiftyone", None)
    with pytest.raises(MissingDependencyError, match="auditor\\[mlflow\\]"):
        report.log_to_mlflow()
    with pytest.raises(MissingDependencyError, match="auditor\\[fiftyone\\]"):
        report.to_fiftyone("x")


def test_cli_flags_map_to_the_config_keys():
    from auditor.cli import build_parser, resolve_audit_config

    base = ["audit", "--model", "m:f", "--data", "folder"]
    config = resolve_audit_config(build_parser().parse_args(base))
    assert not config.report.mlflow.enabled and not config.report.annotations_as_labels
    config = resolve_audit_config(build_parser().parse_args([*base, "--mlflow"]))
    assert config.report.mlflow.enabled and config.report.mlflow.tracking_uri is None
    config = resolve_audit_config(build_parser().parse_args([*base, "--mlflow", "http://127.0.0.1:5000"]))
    assert config.report.mlflow.tracking_uri == "http://127.0.0.1:5000"
    config = resolve_audit_config(build_parser().parse_args([*base, "--annotations", "h.csv"]))
    assert config.report.human_annotations == "h.csv" and config.report.annotations_as_labels  # the CSV's labels are used
    config = resolve_audit_config(build_parser().parse_args([*base, "--annotations", "h.csv", "--annotations-as-labels",
                                                             "--set", "report.annotation_ties=core"]))
    assert config.report.human_annotations == "h.csv" and config.report.annotations_as_labels
    assert config.report.annotation_ties == "core"
