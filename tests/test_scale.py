"""Sharded feature cache: kill -9 resume, half-written shards, stale fingerprints, extraction options, Ray engine."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from auditor.config import ConfigError, load_config
from auditor.data import ImageSource, resolve_num_workers
from auditor.features import (
    ExtractionOptions,
    extract_features,
    run_features,
    shard_path,
)
from auditor.model import ModelAdapter
from tests.conftest import PlantedDataset, TwoChannelNet

ROOT = Path(__file__).resolve().parents[1]
ARRAYS = ("activations", "logits", "labels", "predictions")


class SlowPlanted(PlantedDataset):
    """PlantedDataset whose items take ``delay`` seconds (so a pass can be killed part-way)."""

    def __init__(self, n: int, delay: float = 0.0, bad: tuple[int, ...] = (), stop_at: int | None = None, **kwargs):
        super().__init__(n=n, with_masks=False, **kwargs)
        self.delay, self.bad, self.stop_at = delay, set(bad), stop_at

    def __getitem__(self, i):
        if self.stop_at is not None and i == self.stop_at:
            raise Interrupted(f"interrupted at image {i}")
        if i in self.bad:
            raise OSError(f"image file is truncated ({i})")
        time.sleep(self.delay)
        item = super().__getitem__(i)
        return item[0] * (1 + (i % 7) / 10), i % 2  # both classes, varied activations


class Interrupted(BaseException):
    """Stands for Ctrl-C / a crash inside the pass: not an unreadable image (those are Exceptions)."""


def _files(directory: Path) -> dict[str, bytes]:
    return {name: (directory / f"{name}.npy").read_bytes() for name in ARRAYS}


def _extract(directory, dataset, model=None, **options):
    source = ImageSource(dataset, batch_size=4)
    return extract_features(ModelAdapter(model or TwoChannelNet()), source, directory, progress=False,
                            max_skipped_fraction=0.1, options=ExtractionOptions(**{"shard_size": 8, **options}))


WORKER = """
import sys
from tests.test_scale import SlowPlanted, _extract
_extract(sys.argv[1], SlowPlanted(96, delay=0.02, bad=(13, 50)))
"""


def test_kill_9_at_a_random_point_resumes_from_the_last_shard_bit_identical(tmp_path, caplog):
    caplog.set_level("INFO", logger="auditor.features")
    reference = tmp_path / "reference"
    _extract(reference, SlowPlanted(96, bad=(13, 50)))
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    after = random.Random().randint(1, 8)  # a random point among the 12 shards
    process = subprocess.Popen([sys.executable, "-c", WORKER, str(killed)], env=env, cwd=ROOT)
    deadline = time.monotonic() + 60
    try:
        while len(list((killed / "shards").glob("shard-*.npz"))) < after and time.monotonic() < deadline:
            assert process.poll() is None, "the extraction ended before it could be killed"
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL
    committed = len(list((killed / "shards").glob("shard-*.npz")))
    assert after <= committed < 12 and not (killed / "complete.json").exists()

    cache = _extract(killed, SlowPlanted(96, bad=(13, 50)))
    assert f"{committed} of 12 shards already committed" in caplog.text, f"killed after {after} shards"
    assert _files(killed) == _files(reference)  # bit-identical
    assert [s.index for s in cache.skipped] == [13, 50] and cache.labels[[13, 50]].tolist() == [-1, -1]
    assert json.loads((killed / "complete.json").read_text()) == json.loads((reference / "complete.json").read_text())


def test_a_half_written_or_truncated_shard_is_never_read(tmp_path, caplog):
    reference = tmp_path / "reference"
    _extract(reference, SlowPlanted(40))
    directory = tmp_path / "interrupted"
    with pytest.raises(Interrupted):
        _extract(directory, SlowPlanted(40, stop_at=30))
    shards = sorted((directory / "shards").glob("shard-*.npz"))
    assert [p.name for p in shards] == [f"shard-00000{i}.npz" for i in range(3)]  # images 0..23 committed
    # a writer that died mid-shard leaves a temporary file; a copied shard can be truncated
    leftover = directory / "shards" / ".shard-000003.12345.deadbeef.tmp"
    leftover.write_bytes(shards[0].read_bytes()[:100])
    truncated = Path(shard_path(directory, 1))
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    caplog.set_level("INFO", logger="auditor.features")
    _extract(directory, SlowPlanted(40))
    assert "ignoring unreadable feature shard" in caplog.text and "2 of 5 shards already committed" in caplog.text
    assert _files(directory) == _files(reference)
    assert not (directory / "shards").exists()


def test_same_architecture_with_new_weights_is_recomputed_with_a_log_line(tmp_path, caplog):
    caplog.set_level("WARNING", logger="auditor.features")
    old = _extract(tmp_path, SlowPlanted(16))
    old_logits = np.array(old.logits)
    retrained = TwoChannelNet(head_weight=torch.tensor([[2.0, 0.5], [-1.0, 1.0]]))
    new = _extract(tmp_path, SlowPlanted(16), model=retrained)
    assert "stale and is recomputed: the model's weights changed" in caplog.text
    images = torch.stack([SlowPlanted(16)[i][0] for i in range(16)])
    expected = ModelAdapter(retrained).forward(images).logits.numpy()
    assert np.allclose(new.logits, expected, atol=1e-6) and not np.allclose(new.logits, old_logits)

    caplog.clear()
    _extract(tmp_path, SlowPlanted(16, seed=3), model=retrained)  # same length, other images
    assert "the dataset changed" in caplog.text
    caplog.clear()
    _extract(tmp_path, SlowPlanted(16, seed=3), model=retrained)
    assert "stale" not in caplog.text


class _WithMasks(SlowPlanted):
    def __getitem__(self, i):
        image, label = super().__getitem__(i)
        return image, label, torch.rand(image.shape[1:]) > 0.5


def test_adding_masks_reuses_the_feature_pass(tmp_path, caplog):
    caplog.set_level("INFO", logger="auditor.features")
    plain = _extract(tmp_path, SlowPlanted(16))
    caplog.clear()
    masked = _extract(tmp_path, _WithMasks(16))  # same images and labels; masks are not in the cached arrays
    assert "stale" not in caplog.text and "reusing cached features" in caplog.text
    assert np.array_equal(masked.activations, plain.activations) and np.array_equal(masked.logits, plain.logits)


def test_extraction_options_keep_results_on_cpu(tmp_path):
    plain = _extract(tmp_path / "plain", SlowPlanted(24))
    channels_last = _extract(tmp_path / "cl", SlowPlanted(24), channels_last=True)
    assert np.allclose(channels_last.activations, plain.activations, atol=1e-6)
    bf16 = _extract(tmp_path / "bf16", SlowPlanted(24), autocast="bf16")
    assert np.allclose(bf16.logits, plain.logits, atol=5e-2)
    assert json.loads((tmp_path / "bf16" / "complete.json").read_text())["fingerprint"]["autocast"] == "bf16"
    model = TwoChannelNet()
    _extract(tmp_path / "restore", SlowPlanted(8), model=model, channels_last=True)
    assert all(p.is_contiguous() for p in model.parameters())  # the user's model is left as it was


def test_num_workers_auto_and_config_keys():
    cores = len(os.sched_getaffinity(0))
    assert resolve_num_workers("auto", 10_000, 64) == max(0, min(cores - 1, 8))
    assert resolve_num_workers("auto", 100, 64) == 0 and resolve_num_workers(3, 10, 64) == 3
    config = load_config({})
    assert config.data.num_workers == "auto" and config.engine == "local"
    assert config.features.autocast == "off" and config.features.channels_last is False
    assert load_config({"engine": "ray", "data": {"num_workers": 2}, "features": {"autocast": "bf16"}}).engine == "ray"
    for bad, match in [({"data": {"num_workers": "many"}}, "num_workers"), ({"features": {"autocast": "fp8"}}, "autocast"),
                       ({"engine": "spark"}, "engine"), ({"features": {"shard_size": 0}}, "shard_size")]:
        with pytest.raises(ConfigError, match=match):
            load_config(bad)


def test_workers_give_the_same_cache_as_the_main_process(tmp_path):
    adapter = ModelAdapter(TwoChannelNet())
    options = ExtractionOptions(shard_size=16)
    main = extract_features(adapter, ImageSource(SlowPlanted(40, bad=(5,)), batch_size=4), tmp_path / "main",
                            progress=False, max_skipped_fraction=0.1, options=options)
    workers = extract_features(adapter, ImageSource(SlowPlanted(40, bad=(5,)), batch_size=4, num_workers=2),
                               tmp_path / "workers", progress=False, max_skipped_fraction=0.1, options=options)
    assert _files(tmp_path / "main") == _files(tmp_path / "workers") and workers.skipped == main.skipped


def test_one_progress_bar_over_every_split(tmp_path, capsys):
    from auditor.config import FeatureConfig

    sources = {"train": ImageSource(SlowPlanted(24), batch_size=4), "val": ImageSource(SlowPlanted(12, seed=1), batch_size=4, name="val")}
    run_features(ModelAdapter(TwoChannelNet()), sources, ["a", "b"], FeatureConfig(shard_size=8), tmp_path, min_images=1,
                 progress=True)
    err = capsys.readouterr().err
    assert "36/36" in err and "val shards 2/2" in err and "img/s" in err
    assert "0/24" not in err and "0/12" not in err  # no per-split bars


class KillOnce(TwoChannelNet):
    """TwoChannelNet whose process dies (like ``kill -9``) on its first batch, once: a marker file remembers it."""

    def __init__(self, marker: str):
        super().__init__()
        self.marker = marker

    def forward(self, x):
        if not os.path.exists(self.marker):
            Path(self.marker).write_text(str(os.getpid()))
            os._exit(1)
        return super().forward(x)


@pytest.mark.slow
def test_ray_on_a_three_node_cluster_with_a_killed_worker_gives_the_single_process_cache(tmp_path):
    ray = pytest.importorskip("ray", reason='the Ray engine is optional: pip install "auditor[ray]"')
    from ray.cluster_utils import Cluster

    reference = tmp_path / "local"
    local = _extract(reference, SlowPlanted(64, bad=(9,)))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    try:
        ray.init(address=cluster.address)
        assert len([n for n in ray.nodes() if n["Alive"]]) == 3
        marker = tmp_path / "killed.pid"
        cache = _extract(tmp_path / "ray", SlowPlanted(64, bad=(9,)), model=KillOnce(str(marker)), engine="ray",
                         ray_actors=2)
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert marker.exists() and int(marker.read_text()) != os.getpid()  # a Ray worker died mid-extraction
    assert _files(tmp_path / "ray") == _files(reference)  # nothing lost, nothing duplicated
    assert cache.skipped == local.skipped


def test_cli_without_ray_exits_2_with_the_pip_command(monkeypatch, capsys, tmp_path):
    from auditor.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` does where the extra is not installed
    code = main(["audit", "--engine", "ray", "--model", "torchvision:resnet18", "--data", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and 'pip install "auditor[ray]"' in err and "engine: ray" in err


def test_shards_go_to_an_fsspec_store_and_resume_there(tmp_path):
    """Shards on shared storage given as an fsspec URL: the same files as a local pass, resumable from the store."""
    import fsspec

    from auditor.features import (
        ShardBuilder,
        committed_shards,
        shard_location,
        shard_ranges,
    )

    dataset = SlowPlanted(40)
    _extract(tmp_path / "local" / "train", dataset)
    memory = f"memory://audit-{tmp_path.name}"
    _extract(tmp_path / "memory" / "train", dataset, shard_store=memory)
    assert _files(tmp_path / "memory" / "train") == _files(tmp_path / "local" / "train")
    assert not fsspec.filesystem("memory").exists(f"/audit-{tmp_path.name}/train/shards")  # removed once consolidated

    store = f"file://{tmp_path / 'shared'}"
    directory = tmp_path / "cache" / "train"
    location = shard_location(directory, store)
    assert location == f"{store}/train/shards"
    adapter = ModelAdapter(TwoChannelNet())
    ranges = shard_ranges(len(dataset), 8)
    local = {name: np.load(tmp_path / "local" / "train" / f"{name}.npy") for name in ARRAYS}
    builder = ShardBuilder(location, 0, *ranges[0], adapter.n_features, adapter.n_classes, 1, "train", adapter.head_name)
    rows = np.arange(*ranges[0])  # shard 0 committed to the store by an earlier, interrupted pass
    builder.add(0, rows, local["activations"][rows], local["logits"][rows], local["labels"][rows], [])
    builder.commit()
    assert set(committed_shards(location, ranges, adapter.n_features, adapter.n_classes)) == {0}
    assert (tmp_path / "shared" / "train" / "shards" / "shard-000000.npz").is_file()
    _extract(directory, dataset, shard_store=store)
    assert _files(directory) == _files(tmp_path / "local" / "train")
