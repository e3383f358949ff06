"""A generated image world with known, class-specific spurious cues.

Each image shows one object (the class: a shape of random colour, size, position
and rotation) on a noisy background with small clutter. Three cues are planted,
each tied to one class in training and independent of the class in validation
and test:

* ``stripes``: a striped background texture (tied to ``circle``),
* ``tree``: a small co-occurring tree beside the object (tied to ``square``),
* ``warm``: a warm colour cast over the whole scene (tied to ``triangle``).

``plus`` and ``ring`` carry no cue (controls). Every image comes with its object
mask, the mask of the co-occurring tree, per-image cue flags and the attributes
that captions are made from, so every finding of an audit can be scored.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

SHAPES = ("circle", "square", "triangle", "plus", "ring", "diamond")
CUES = ("stripes", "tree", "warm")
COLOURS = {
    "red": (0.85, 0.15, 0.15),
    "green": (0.15, 0.7, 0.2),
    "blue": (0.15, 0.3, 0.9),
    "yellow": (0.9, 0.85, 0.15),
    "purple": (0.6, 0.2, 0.75),
    "cyan": (0.1, 0.8, 0.85),
    "white": (0.95, 0.95, 0.95),
    "black": (0.08, 0.08, 0.08),
}
# Bump whenever rendering changes, so cached worlds and models are regenerated.
GENERATOR_VERSION = 2
CUE_DESCRIPTIONS = {
    "stripes": "striped background",
    "tree": "a small tree",
    "warm": "warm orange light",
}


@dataclass(frozen=True)
class ClassSpec:
    """One class of the world.

    Args:
        shape: one of :data:`SHAPES`, the class object.
        cue: one of :data:`CUES` tied to this class in training, or ``None`` (control).
        label_noise: fraction of this class's training labels that are flipped
            from other classes' images to this class (0 = clean).
        collision_rate: fraction of this class's images (all splits) that also show
            a second, smaller object of class ``collision_shape`` (a feature collision).
        collision_shape: the shape of the colliding object.
        cue_rate: P(cue | this class) in training; ``None`` uses the world's ``cue_rate_train``.
        collision_scale: (min, max) radius of the colliding object relative to the class object's.
        collision_scale_eval: the same in validation and test; ``None`` uses ``collision_scale``.
    """

    shape: str
    cue: str | None = None
    label_noise: float = 0.0
    collision_rate: float = 0.0
    collision_shape: str | None = None
    cue_rate: float | None = None
    collision_scale: tuple[float, float] = (0.8, 0.8)
    collision_scale_eval: tuple[float, float] | None = None

    def __post_init__(self):
        rates = {"label_noise": self.label_noise, "collision_rate": self.collision_rate, "cue_rate": self.cue_rate}
        for name, rate in rates.items():
            if rate is not None and not 0 <= rate <= 1:
                raise ValueError(f"{name} must lie in [0, 1]; got {rate}")
        for name, scale in (("collision_scale", self.collision_scale), ("collision_scale_eval", self.collision_scale_eval)):
            if scale is not None and not (len(scale) == 2 and 0 < scale[0] <= scale[1]):
                raise ValueError(f"{name} must be (min, max) with 0 < min <= max; got {scale}")


DEFAULT_CLASSES = (
    ClassSpec("circle", "stripes"),
    ClassSpec("square", "tree"),
    ClassSpec("triangle", "warm"),
    ClassSpec("plus"),
    ClassSpec("ring"),
)


@dataclass(frozen=True)
class WorldSpec:
    """Parameters of a generated world; equal specs give identical data.

    Args:
        classes: the classes, in label order.
        image_size: side of the square images in pixels.
        n_train, n_val, n_test: images per class in each split.
        cue_rate_train: P(cue | its own class) in training.
        cue_rate_other_train: P(cue | any other class) in training.
        cue_rate_eval: P(cue | any class) in validation and test (balanced).
        object_scale: (min, max) object radius as a fraction of the image side.
        noise: standard deviation of the per-pixel noise.
        seed: base seed; each split derives its own stream from it.
    """

    classes: tuple[ClassSpec, ...] = DEFAULT_CLASSES
    image_size: int = 64
    n_train: int = 2000
    n_val: int = 200
    n_test: int = 300
    cue_rate_train: float = 0.95
    cue_rate_other_train: float = 0.05
    cue_rate_eval: float = 0.5
    object_scale: tuple[float, float] = (0.12, 0.22)
    noise: float = 0.06
    seed: int = 0

    def __post_init__(self):
        for spec in self.classes:
            if spec.shape not in SHAPES:
                raise ValueError(f"unknown shape {spec.shape!r}; choose one of {SHAPES}")
            if spec.cue is not None and spec.cue not in CUES:
                raise ValueError(f"unknown cue {spec.cue!r}; choose one of {CUES}")
        if self.image_size < 16:
            raise ValueError(f"image_size must be at least 16; got {self.image_size}")

    @property
    def class_names(self) -> list[str]:
        """Class names in label order."""
        return [c.shape for c in self.classes]

    @property
    def cue_of_class(self) -> dict[int, str]:
        """Label -> cue name, for the classes that carry a cue."""
        return {i: c.cue for i, c in enumerate(self.classes) if c.cue is not None}

    def fingerprint(self) -> str:
        """A short stable hash of the spec, for cache folders."""
        text = json.dumps({"version": GENERATOR_VERSION, **dataclasses.asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass
class WorldSplit:
    """One generated split, as plain arrays.

    Attributes:
        images: uint8 ``(N, H, W, 3)``.
        labels: int64 ``(N,)`` (possibly noisy in training).
        true_labels: int64 ``(N,)``, the shape actually drawn.
        masks: bool ``(N, H, W)``, pixels of the class object.
        tree_masks: bool ``(N, H, W)``, pixels of the co-occurring tree (empty if none).
        cues: bool ``(N, len(CUES))``, which cues the image carries, in :data:`CUES` order.
        colours: int64 ``(N,)``, index of the object colour in :data:`COLOURS`.
        collision: bool ``(N,)``, image also shows a colliding object of another class.
    """

    images: np.ndarray
    labels: np.ndarray
    true_labels: np.ndarray
    masks: np.ndarray
    tree_masks: np.ndarray
    cues: np.ndarray
    colours: np.ndarray
    collision: np.ndarray
    class_names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def cue_flag(self, cue: str) -> np.ndarray:
        """bool ``(N,)``: images carrying ``cue``."""
        return self.cues[:, CUES.index(cue)]

    def caption(self, i: int) -> str:
        """A full caption of image ``i`` naming object, colour, background and cues."""
        colour = list(COLOURS)[self.colours[i]]
        shape = self.class_names[self.true_labels[i]]
        background = "striped background" if self.cue_flag("stripes")[i] else "plain background"
        parts = [f"a {colour} {shape} on a {background}"]
        if self.cue_flag("tree")[i]:
            parts.append("with a small tree")
        if self.cue_flag("warm")[i]:
            parts.append("in warm orange light")
        return " ".join(parts)



def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    return np.meshgrid(coords, coords, indexing="xy")


def shape_mask(shape: str, size: int, cx: float, cy: float, radius: float, angle: float) -> np.ndarray:
    """bool ``(size, size)`` mask of ``shape`` centred at (cx, cy) in unit coordinates.

    Raises:
        ValueError: for an unknown shape.
    """
    xx, yy = _grid(size)
    dx, dy = xx - cx, yy - cy
    cos, sin = np.cos(angle), np.sin(angle)
    u, v = cos * dx + sin * dy, -sin * dx + cos * dy
    if shape == "circle":
        return u**2 + v**2 <= radius**2
    if shape == "ring":
        d2 = u**2 + v**2
        return (d2 <= radius**2) & (d2 >= (0.55 * radius) ** 2)
    if shape == "square":
        half = radius * 0.85
        return (np.abs(u) <= half) & (np.abs(v) <= half)
    if shape == "diamond":
        return np.abs(u) / 0.75 + np.abs(v) <= radius
    if shape == "plus":
        arm = radius * 0.45
        return ((np.abs(u) <= arm) & (np.abs(v) <= radius)) | ((np.abs(v) <= arm) & (np.abs(u) <= radius))
    if shape == "triangle":
        inside = np.ones_like(u, dtype=bool)
        for k in range(3):
            theta = angle + k * 2 * np.pi / 3
            nx, ny = np.cos(theta), np.sin(theta)
            inside &= nx * dx + ny * dy <= radius * 0.55
        return inside
    raise ValueError(f"unknown shape {shape!r}; choose one of {SHAPES}")


def _tree_masks(size: int, cx: float, cy: float, scale: float) -> tuple[np.ndarray, np.ndarray]:
    xx, yy = _grid(size)
    crown = (np.abs(xx - cx) <= (cy + scale * 0.2 - yy) * 0.6) & (yy >= cy - scale) & (yy <= cy + scale * 0.2)
    trunk = (np.abs(xx - cx) <= scale * 0.15) & (yy > cy + scale * 0.2) & (yy <= cy + scale * 0.6)
    return crown, trunk


def _place_away(rng: np.random.Generator, cx: float, cy: float, min_dist: float, margin: float) -> tuple[float, float]:
    for _ in range(50):
        x, y = rng.uniform(margin, 1 - margin, size=2)
        if np.hypot(x - cx, y - cy) >= min_dist:
            return float(x), float(y)
    return float(1 - cx), float(1 - cy)


def render_image(
    rng: np.random.Generator,
    spec: WorldSpec,
    shape: str,
    cues: dict[str, bool],
    colour: int,
    collision_shape: str | None = None,
    collision_scale: tuple[float, float] = ClassSpec.collision_scale,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw one image.

    Returns:
        ``(image float32 (H, W, 3) in [0, 1], object mask bool (H, W), tree mask bool (H, W))``.
    """
    size = spec.image_size
    xx, yy = _grid(size)
    grey = rng.uniform(0.35, 0.65)
    tilt = rng.normal(0, 0.08, size=2)
    image = np.empty((size, size, 3), np.float32)
    image[:] = (grey + tilt[0] * (xx - 0.5) + tilt[1] * (yy - 0.5))[..., None]
    image += rng.normal(0, 0.03, size=3).astype(np.float32)  # mild random tint of the backdrop

    if cues["stripes"]:
        angle = np.pi / 4 + rng.uniform(-0.3, 0.3)
        period = rng.uniform(0.09, 0.14)
        phase = rng.uniform(0, 2 * np.pi)
        wave = np.sin(2 * np.pi * (np.cos(angle) * xx + np.sin(angle) * yy) / period + phase)
        image += (0.22 * np.sign(wave))[..., None].astype(np.float32)

    for _ in range(rng.integers(0, 3)):  # clutter: small blobs of random colour
        bx, by = rng.uniform(0.05, 0.95, size=2)
        blob = (xx - bx) ** 2 + (yy - by) ** 2 <= rng.uniform(0.02, 0.04) ** 2
        image[blob] = rng.uniform(0.1, 0.9, size=3)

    radius = rng.uniform(*spec.object_scale)
    margin = radius + 0.04
    cx, cy = rng.uniform(margin, 1 - margin, size=2)
    angle = rng.uniform(0, 2 * np.pi)

    tree_mask = np.zeros((size, size), bool)
    if cues["tree"]:
        scale = rng.uniform(0.11, 0.15)
        tx, ty = _place_away(rng, cx, cy, radius + scale + 0.05, scale + 0.03)
        crown, trunk = _tree_masks(size, tx, ty, scale)
        image[crown] = (0.1, 0.55, 0.15)
        image[trunk] = (0.45, 0.28, 0.1)
        tree_mask = crown | trunk

    if collision_shape is not None:
        low, high = collision_scale
        other_r = radius * (low if low == high else rng.uniform(low, high))
        ox, oy = _place_away(rng, cx, cy, radius + other_r + 0.03, other_r + 0.03)
        other = shape_mask(collision_shape, size, ox, oy, other_r, rng.uniform(0, 2 * np.pi))
        image[other] = COLOURS[list(COLOURS)[rng.integers(len(COLOURS))]]

    mask = shape_mask(shape, size, cx, cy, radius, angle)
    image[mask] = np.asarray(COLOURS[list(COLOURS)[colour]], np.float32) + rng.normal(0, 0.05, size=3)
    tree_mask &= ~mask

    if cues["warm"]:
        image = image * np.array([1.25, 0.95, 0.6], np.float32) + np.array([0.08, 0.03, 0.0], np.float32)

    image += rng.normal(0, spec.noise, size=image.shape).astype(np.float32)
    return np.clip(image, 0, 1), mask, tree_mask


SPLIT_OFFSETS = {"train": 0, "val": 1, "test": 2}


def generate_split(spec: WorldSpec, split: str) -> WorldSplit:
    """Generate one split of the world.

    Args:
        spec: the world's parameters.
        split: ``"train"``, ``"val"`` or ``"test"``.

    Returns:
        A :class:`WorldSplit` with images grouped by class (class 0 first).

    Raises:
        ValueError: for an unknown split.
    """
    if split not in SPLIT_OFFSETS:
        raise ValueError(f"split must be one of {list(SPLIT_OFFSETS)}; got {split!r}")
    rng = np.random.default_rng([spec.seed, SPLIT_OFFSETS[split]])
    per_class = {"train": spec.n_train, "val": spec.n_val, "test": spec.n_test}[split]
    n_classes = len(spec.classes)
    n = per_class * n_classes
    size = spec.image_size
    out = WorldSplit(
        images=np.empty((n, size, size, 3), np.uint8),
        labels=np.repeat(np.arange(n_classes), per_class).astype(np.int64),
        true_labels=np.repeat(np.arange(n_classes), per_class).astype(np.int64),
        masks=np.zeros((n, size, size), bool),
        tree_masks=np.zeros((n, size, size), bool),
        cues=np.zeros((n, len(CUES)), bool),
        colours=rng.integers(0, len(COLOURS), size=n).astype(np.int64),
        collision=np.zeros(n, bool),
        class_names=spec.class_names,
    )
    for i in range(n):
        label = int(out.true_labels[i])
        cls = spec.classes[label]
        for j, cue in enumerate(CUES):
            if split == "train":
                own_rate = spec.cue_rate_train if cls.cue_rate is None else cls.cue_rate
                rate = own_rate if cls.cue == cue else spec.cue_rate_other_train
            else:
                rate = spec.cue_rate_eval
            out.cues[i, j] = rng.random() < rate
        collide = cls.collision_shape is not None and rng.random() < cls.collision_rate
        out.collision[i] = collide
        image, mask, tree = render_image(
            rng,
            spec,
            cls.shape,
            dict(zip(CUES, out.cues[i])),
            int(out.colours[i]),
            cls.collision_shape if collide else None,
            cls.collision_scale if split == "train" or cls.collision_scale_eval is None else cls.collision_scale_eval,
        )
        out.images[i] = np.round(image * 255).astype(np.uint8)
        out.masks[i] = mask
        out.tree_masks[i] = tree

    if split == "train":
        for label, cls in enumerate(spec.classes):
            if cls.label_noise <= 0:
                continue
            others = np.flatnonzero(out.true_labels != label)
            n_flip = int(round(cls.label_noise * per_class))
            flipped = rng.choice(others, size=min(n_flip, len(others)), replace=False)
            out.labels[flipped] = label
    return out
