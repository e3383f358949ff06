"""The CLI in a pipeline: `auditor audit --mlflow URI --annotations CSV --annotations-as-labels`, then `auditor export fiftyone`."""

from __future__ import annotations

import json
import os

import pytest

from auditor.cli import main
from tests.test_cli import _config, world  # noqa: F401  (the module-scoped world fixture: ImageFolders + a trained CNN)


@pytest.mark.slow
def test_audit_logs_to_mlflow_with_human_labels_then_exports_to_fiftyone(world, tmp_path, capsys, monkeypatch):  # noqa: F811
    monkeypatch.chdir(tmp_path)  # the SQLite store keeps artifacts in ./mlruns
    pytest.importorskip("mlflow", reason='mlflow is not installed (pip install "auditor[mlflow]")')
    from mlflow.tracking import MlflowClient

    # A first audit gives the verdicts; the humans then contradict the first class's first verdict (5 votes, 4 against).
    (tmp_path / "first").mkdir()
    first = _config(world, tmp_path / "first")
    assert main(["audit", "-c", first, "--quiet-summary", "--no-html"]) == 0
    results = json.loads((tmp_path / "first" / "out" / "results.json").read_text())
    verdict = results["classes"][0]["verdicts"][0]
    flipped = "main_object" if verdict["label"] == "spurious" else "background"
    kept = "background" if flipped == "main_object" else "main_object"
    human = tmp_path / "human.csv"
    human.write_text("Input.class_index,Input.feature_index,Answer.main\n"
                     + "".join(f"0,{verdict['feature']},{answer}\n" for answer in [flipped] * 4 + [kept]))

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = _config(world, tmp_path)
    code = main(["audit", "-c", config, "--quiet-summary", "--mlflow", uri, "--annotations", str(human), "--annotations-as-labels"])
    out = capsys.readouterr().out
    assert code == 0 and "mlflow run: " in out
    run_id = out.split("mlflow run: ")[1].split()[0]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    section = results["sections"]["human_agreement"]
    assert section["used_for_rankings"] and section["n_changed"] == 1 and section["confusion"] != [[0, 0], [0, 0]]
    used = next(v for v in results["classes"][0]["verdicts"] if v["feature"] == verdict["feature"])
    assert used["label"] != verdict["label"]  # the human label decided the pair
    run = MlflowClient(uri).get_run(run_id)
    assert run.data.params["auditor.report.annotations_as_labels"] == "True"
    assert run.data.metrics["audit.n_spurious_features"] == sum(len(c["spurious_features"]) for c in results["classes"])
    assert "auditor/report.html" in {a.path for a in MlflowClient(uri).list_artifacts(run_id, "auditor")}

    try:
        from auditor.integrations.fiftyone import _fiftyone

        fo = _fiftyone()  # imported after mlflow, as in a pipeline that uses both
    except ImportError:
        pytest.skip('fiftyone is not installed (pip install "auditor[fiftyone]")')
    try:
        fo.Dataset("auditor-cli-probe", overwrite=True).delete()
    except Exception as error:
        pytest.skip(f"FiftyOne's embedded database cannot start here: {type(error).__name__}: {error}")
    code = main(["export", "fiftyone", str(tmp_path / "out" / "results.json"), "--name", "auditor-cli-world", "--no-persistent"])
    assert code == 0, capsys.readouterr().err
    dataset = fo.load_dataset("auditor-cli-world")
    assert len(dataset) == results["meta"]["n_val_images"]
    spurious_classes = [c["index"] for c in results["classes"] if c["spurious_features"]]
    assert spurious_classes and dataset.count("heatmap") == sum(
        len(dataset.match(fo.ViewField("class_index") == c)) for c in spurious_classes)  # the model was loaded from the config
    assert all(os.path.isfile(path) for path in dataset.values("filepath"))
