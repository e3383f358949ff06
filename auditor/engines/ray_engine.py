"""Feature extraction as a Ray Data pipeline.

Images are read and preprocessed by Ray tasks (CPU), the model runs in an actor pool (one
actor per GPU, or per CPU slot), and the driver assembles the batches into the same
fixed-size shards as the local engine, committing each atomically with
:func:`auditor.features.commit_shard`. A worker that dies is Ray's business: Ray restarts
the actor and retries its task; a batch that arrives twice is ignored (each shard counts
its batches by number), and the shard commit is an atomic rename, so a retry neither loses
nor duplicates rows. auditor adds no scheduler, queue or worker protocol of its own.
"""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import numpy as np
import torch

from auditor.data import ImageSource, SkippedImage
from auditor.engines import require_ray
from auditor.features import (
    ExtractionOptions,
    ShardBuilder,
    _check_skipped,
    _Progress,
    forward_batch,
    forward_settings,
    shard_batches,
)
from auditor.model import ModelAdapter

logger = logging.getLogger(__name__)

READ_CPUS = 0.5
"""CPUs reserved by each image-reading task."""


def _model_bytes(model: torch.nn.Module) -> tuple[bool, bytes]:
    """``(is TorchScript, bytes)``: the whole module, loadable on a machine without the driver's device."""
    buffer = io.BytesIO()
    script = isinstance(model, torch.jit.ScriptModule)
    (torch.jit.save if script else torch.save)(model, buffer)
    return script, buffer.getvalue()


def _load_model(blob: tuple[bool, bytes]) -> torch.nn.Module:
    script, data = blob
    if script:
        return torch.jit.load(io.BytesIO(data), map_location="cpu")
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)


class _ReadBatch:
    """Ray task body: read one batch of images (skipping unreadable ones) in a CPU task."""

    def __init__(self, source: ImageSource):
        self.normalised, self.collate, self.shape = source.items, source.collate_fn, source.image_shape

    def __call__(self, row: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        start, stop = int(row["start"][0]), int(row["stop"][0])
        items = [self.normalised[i] for i in range(start, stop)]
        images, labels, _masks, kept, skipped = self.collate(items)
        if images is None:
            images = torch.zeros((0, *self.shape))
        return {"shard": row["shard"], "batch": row["batch"], "kept": kept[None], "images": images.numpy()[None],
                "labels": labels.numpy()[None], "skipped": np.array([json.dumps([s.to_dict() for s in skipped])])}


class _Forward:
    """Ray actor: loads the model once, then runs the forward pass on each batch."""

    def __init__(self, model: Any, head: str, feature_layer: str | None, device: str, options: ExtractionOptions,
                 threads: int):
        import ray

        if isinstance(model, ray.ObjectRef):
            model = ray.get(model)
        torch.set_num_threads(max(1, threads))
        self.adapter = ModelAdapter(_load_model(model), head=head, feature_layer=feature_layer, device=device)
        self.options = options
        self.settings = forward_settings(self.adapter, options)
        self.settings.__enter__()  # channels-last for the actor's lifetime (its own copy of the model)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images = torch.from_numpy(np.ascontiguousarray(batch["images"][0]))
        d, k = self.adapter.n_features, self.adapter.n_classes
        if len(images):
            features, logits = forward_batch(self.adapter, images, self.options)
        else:
            features, logits = np.zeros((0, d), np.float32), np.zeros((0, k), np.float32)
        return {"shard": batch["shard"], "batch": batch["batch"], "kept": batch["kept"], "labels": batch["labels"],
                "skipped": batch["skipped"], "activations": features[None], "logits": logits[None]}


def _actors(ray: Any, options: ExtractionOptions) -> tuple[int, float, str]:
    """(actors, GPUs per actor, device) from the options and the cluster's resources."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus:
        return options.ray_actors or gpus, 1.0, "cuda"
    cpus = int(resources.get("CPU", 1))
    return options.ray_actors or max(1, cpus // 2), 0.0, "cpu"


def extract_shards_ray(adapter: ModelAdapter, source: ImageSource, location: str, ranges: list[tuple[int, int]],
                       pending: list[int], options: ExtractionOptions, skipped_so_far: dict[int, SkippedImage],
                       covered: int, max_skipped_fraction: float, progress: _Progress) -> None:
    """Compute and commit the ``pending`` shards on a Ray cluster (see the module docstring).

    Args:
        adapter: the model adapter (its model is serialised to the actors).
        source: the images (its dataset is serialised to the read tasks).
        location: the split's shard location, a path or fsspec URL (shards are committed there by this process).
        ranges: ``(start, stop)`` of every shard.
        pending: the shards still to compute.
        options: extraction options (``ray_address``, ``ray_actors``, numerics).
        skipped_so_far: index -> unreadable image, updated in place.
        covered: images already covered by committed shards.
        max_skipped_fraction: share of unreadable images tolerated.
        progress: the shared progress tracker.

    Raises:
        MissingDependencyError: Ray is not installed.
        InvalidInputError, NumericalError: as :func:`auditor.features.extract_features`.
    """
    require_ray()
    import ray
    import ray.data

    if not ray.is_initialized():
        ray.init(address=options.ray_address, ignore_reinit_error=True, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    context = ray.data.DataContext.get_current()
    saved = (context.execution_options.preserve_order, context.enable_progress_bars)
    context.execution_options.preserve_order = True  # shards complete in order: few partial shards in memory
    context.enable_progress_bars = False  # auditor's own bar covers the whole extraction
    n_actors, gpus, device = _actors(ray, options)
    logger.info("ray: %d model actors on %s, %d shards to compute", n_actors, device, len(pending))
    d, k = adapter.n_features, adapter.n_classes
    rows, builders = [], {}
    for shard in pending:
        batches = shard_batches(*ranges[shard], source.batch_size)
        builders[shard] = ShardBuilder(location, shard, *ranges[shard], d, k, len(batches), source.name, adapter.head_name)
        rows += [{"shard": shard, "batch": b, "start": int(idx[0]), "stop": int(idx[-1]) + 1} for b, idx in enumerate(batches)]
    try:
        model = ray.put(_model_bytes(adapter.model))
        dataset = (
            ray.data.from_items(rows, override_num_blocks=min(len(rows), 4 * max(1, n_actors) * 8))
            # an instance, not a class: CPU tasks (their own resources keep Ray from fusing them into the actors)
            .map_batches(_ReadBatch(source), batch_size=1, num_cpus=READ_CPUS)
            .map_batches(_Forward, batch_size=1, compute=ray.data.ActorPoolStrategy(size=n_actors), num_gpus=gpus,
                         num_cpus=0 if gpus else 1,
                         fn_constructor_kwargs=dict(model=model, head=adapter.head_name, feature_layer=adapter.feature_layer_name,
                                                    device=device, options=options, threads=1 if not gpus else 4))
        )
        for out in dataset.iter_batches(batch_size=1, batch_format="numpy", prefetch_batches=2):
            shard, number = int(out["shard"][0]), int(out["batch"][0])
            if shard not in builders:
                continue  # already committed (a duplicate of a retried task)
            skipped = [SkippedImage.from_dict(s) for s in json.loads(str(out["skipped"][0]))]
            for item in skipped:
                if item.index not in skipped_so_far:
                    logger.warning("skipping unreadable %s %s", source.name, item.describe())
                skipped_so_far[item.index] = item
            builder = builders[shard]
            fresh = number not in builder.seen_batches
            complete = builder.add(number, out["kept"][0], out["activations"][0], out["logits"][0], out["labels"][0], skipped)
            if not fresh:
                continue
            start, stop = ranges[shard]
            batch_size = min(source.batch_size, stop - start - number * source.batch_size)
            covered += batch_size
            _check_skipped(source, tuple(skipped_so_far.values()), covered, max_skipped_fraction)
            progress.images_done(batch_size, len(skipped_so_far))
            if complete:
                builders.pop(shard).commit()
                progress.shard_done()
    finally:
        context.execution_options.preserve_order, context.enable_progress_bars = saved
    source.record_skipped(skipped_so_far.values())
    if builders:
        raise RuntimeError(f"the Ray pipeline ended with shards {sorted(builders)} incomplete; run the audit again to resume")
