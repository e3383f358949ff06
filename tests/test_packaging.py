"""The built wheel works on its own: prompts, templates and the demo's entry points ship inside it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(ROOT)],
                   check=True, capture_output=True, text=True, timeout=600)
    (path,) = out.glob("auditor-*.whl")
    return path


@pytest.mark.slow
def test_wheel_ships_prompts_templates_and_entry_points(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("auditor/prompts/") and n.endswith(".yaml") for n in names)
    assert "auditor/report/templates/report.html.j2" in names
    assert any(n.startswith("auditor/report/templates/sections/") for n in names)
    (entry_points,) = [n for n in names if n.endswith("entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[auditor.sam_models]" in text and "tiny = auditor.demo.zoo.tiny_sam:sam_builder" in text
    assert "[auditor.demo]" in text and "auditor = auditor.cli:main" in text


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_runs_the_quick_demo_with_concepts(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    site = next((env_dir / "lib").glob("python*/site-packages"))
    # The fresh venv sees this environment's dependencies (torch etc.) but not the project itself: the
    # editable install's finder lives in a .pth file, and .pth files of an added path are not read.
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(env_dir / "bin" / "python"), "install", "--no-deps",
                    "--quiet", str(wheel)], check=True, capture_output=True, text=True, timeout=600)
    run = tmp_path / "run"
    run.mkdir()
    environment = {**os.environ, "PYTHONPATH": "", "HF_HUB_OFFLINE": "1"}
    where = subprocess.run([str(env_dir / "bin" / "python"), "-c", "import auditor; print(auditor.__file__)"],
                           cwd=run, env=environment, capture_output=True, text=True, check=True)
    assert str(site) in where.stdout, where.stdout  # the wheel's copy, not the repository's
    result = subprocess.run([str(env_dir / "bin" / "auditor"), "demo", "--quick", "--concepts", "--output-dir", "out"],
                            cwd=run, env=environment, capture_output=True, text=True, timeout=1500, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((run / "out" / "results.json").read_text())
    assert results["sections"]["concepts"]["n_concepts"] > 10  # the bundled prompt files were found
    assert (run / "out" / "report.html").read_text().count("<section") > 5
    assert "[OK ] circle" in result.stdout
