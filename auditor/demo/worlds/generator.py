"""A family of generated "proving ground" worlds with known cues, object masks and per-image cue flags.

Each world is a small classification task (32 px by default) whose objects are either
the built-in shapes or *real* handwritten digits (``sklearn.datasets.load_digits``,
upscaled), on a plain noisy backdrop or on crops of real photographs bundled with
installed packages (``skimage.data``, ``sklearn.datasets.load_sample_images``). Each cue
class carries one cue in training (rate ``cue_rate``, default 95%); in validation and
test every cue of the world is present in 50% of the images of every class,
independently of the class. Cue kinds (:data:`CUE_KINDS`):

* ``grass`` / ``brick`` / ``gravel`` / ``page``: the background is a crop of that real photograph
  (``skimage.data``; ``page`` is a scanned page of printed text), instead of the world's usual backdrop;
* ``cat``: a co-occurring real object, a small patch cut from a photograph of a cat's
  face (``skimage.data.chelsea``), placed beside the class object;
* ``warm`` / ``cool``: a colour cast over the whole scene;
* ``tag``: a small white "R" (like a hospital side token or a photographer's watermark)
  in the fixed top-left corner, drawn with PIL's default font;
* ``watermark``: a translucent white "TM" stamped at a random place beside the object (a watermark
  that moves, unlike ``tag``);
* ``vignette``: the image darkens towards its corners, over object and background alike;
* ``border``: a thin yellow frame around the image;
* ``stripes`` / ``tree``: the built-in world's striped background and small tree.

Every random number of an image is drawn before its cues are applied and independently
of them, so rendering the same draw with and without a cue gives a counterfactual pair
(see :func:`render`): only the cue's pixels (or, for casts, the colours) change.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from auditor.demo.world.generator import COLOURS, SHAPES, _grid, _tree_masks, shape_mask

GENERATOR_VERSION = 1
TEXTURE_CUES = ("grass", "brick", "gravel", "page")
CUE_KINDS = (*TEXTURE_CUES, "cat", "warm", "cool", "tag", "border", "stripes", "tree", "watermark", "vignette")
# Cues whose pixels are localised (their pixels are recorded in ``cue_masks``).
LOCAL_CUES = ("cat", "tag", "border", "tree", "watermark")
# Watermark placements reuse the second half of the co-object placement draws: adding the cue kind changed no
# earlier world's images, and a watermark is placed independently of a co-object in the same image.
_WATERMARK_PLACES = slice(25, None)
BACKGROUNDS = ("plain", "photos")
SPLIT_OFFSETS = {"train": 0, "val": 1, "test": 2}
# Photographs (not used as cues) whose crops make the "photos" backdrop.
BACKDROP_PHOTOS = ("coffee", "astronaut", "rocket", "hubble_deep_field", "immunohistochemistry", "china", "flower")


def parse_object(obj: str) -> tuple[str, str, str | None]:
    """``"shape:circle@red"`` -> ``("shape", "circle", "red")``; the colour is None when none is given."""
    spec, _, colour = obj.partition("@")
    kind, _, value = spec.partition(":")
    return kind, value, colour or None


@dataclass(frozen=True)
class ProvingClass:
    """One class of a proving world.

    Args:
        name: class name.
        obj: ``"shape:<one of SHAPES>"`` or ``"digit:<0-9>"`` (a real handwritten digit), optionally with
            ``"@<one of COLOURS>"`` appended: every object of the class then has that colour (with the usual small
            jitter) instead of a random one, as real classes often have (a lemon is yellow).
        cue: one of :data:`CUE_KINDS` tied to this class in training, or ``None`` (a clean control).
        cue_rate: P(cue | this class) in training.
        strength: cue intensity in (0, 1]: blend weight of textures, patches, tags and borders,
            and fraction of the full colour cast (1 = the full cue).
    """

    name: str
    obj: str
    cue: str | None = None
    cue_rate: float = 0.95
    strength: float = 1.0

    def __post_init__(self):
        kind, value, colour = parse_object(self.obj)
        valid = (kind == "shape" and value in SHAPES) or (kind == "digit" and value in tuple("0123456789"))
        if not valid or (colour is not None and colour not in COLOURS):
            raise ValueError(f"obj must be 'shape:<{'|'.join(SHAPES)}>' or 'digit:<0-9>', optionally followed by "
                             f"'@<{'|'.join(COLOURS)}>'; got {self.obj!r}")
        if self.cue is not None and self.cue not in CUE_KINDS:
            raise ValueError(f"unknown cue {self.cue!r}; choose one of {CUE_KINDS}")
        if not 0 <= self.cue_rate <= 1:
            raise ValueError(f"cue_rate must lie in [0, 1]; got {self.cue_rate}")
        if not 0 < self.strength <= 1:
            raise ValueError(f"strength must lie in (0, 1]; got {self.strength}")


@dataclass(frozen=True)
class ProvingWorld:
    """Parameters of one proving world; equal specs give identical data.

    Args:
        name: short name (used in tables and cache folders).
        classes: the classes, in label order.
        image_size: side of the square images in pixels.
        object_area: (min, max) fraction of the image covered by the object mask.
        background: ``"plain"`` (noisy grey gradient) or ``"photos"`` (crops of real photographs).
        n_train, n_val, n_test: images per class in each split.
        cue_rate_other_train: P(a cue | a class that does not own it) in training.
        cue_rate_eval: P(each cue | any class) in validation and test.
        noise: standard deviation of the per-pixel noise.
        seed: base seed; each split derives its own stream.
        description: one line for tables.
    """

    name: str
    classes: tuple[ProvingClass, ...]
    image_size: int = 32
    object_area: tuple[float, float] = (0.10, 0.25)
    background: str = "plain"
    n_train: int = 600
    n_val: int = 100
    n_test: int = 150
    cue_rate_other_train: float = 0.05
    cue_rate_eval: float = 0.5
    noise: float = 0.04
    seed: int = 0
    description: str = ""

    def __post_init__(self):
        if self.background not in BACKGROUNDS:
            raise ValueError(f"background must be one of {BACKGROUNDS}; got {self.background!r}")
        low, high = self.object_area
        if not 0 < low <= high < 0.6:
            raise ValueError(f"object_area must be (min, max) with 0 < min <= max < 0.6; got {self.object_area}")
        if self.image_size < 16:
            raise ValueError(f"image_size must be at least 16; got {self.image_size}")
        if len({c.name for c in self.classes}) != len(self.classes):
            raise ValueError(f"class names must be unique; got {[c.name for c in self.classes]}")

    @property
    def class_names(self) -> list[str]:
        """Class names in label order."""
        return [c.name for c in self.classes]

    @property
    def cues(self) -> tuple[str, ...]:
        """The world's cues, in order of first use by a class."""
        return tuple(dict.fromkeys(c.cue for c in self.classes if c.cue is not None))

    @property
    def cue_of_class(self) -> dict[int, str]:
        """Label -> cue name, for the classes that carry a cue."""
        return {i: c.cue for i, c in enumerate(self.classes) if c.cue is not None}

    @property
    def control_classes(self) -> list[int]:
        """Labels of the clean control classes (no cue)."""
        return [i for i, c in enumerate(self.classes) if c.cue is None]

    def fingerprint(self) -> str:
        """A short stable hash of the spec, for cache folders."""
        text = json.dumps({"version": GENERATOR_VERSION, **dataclasses.asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass
class ProvingSplit:
    """One generated split, as plain arrays (the fields :class:`~auditor.demo.world.dataset.WorldDataset` reads).

    Attributes:
        images: uint8 ``(N, H, W, 3)``.
        labels: int64 ``(N,)``.
        true_labels: int64 ``(N,)`` (equal to ``labels``: the proving worlds have no label noise).
        masks: bool ``(N, H, W)``, pixels of the class object.
        cue_masks: bool ``(N, H, W)``, pixels of localised cues (co-object, tag, border, tree; empty if none).
        cues: bool ``(N, len(world.cues))``, which of the world's cues each image carries.
        own_cue: bool ``(N,)``, the image carries its own class's cue (always False for controls).
        class_names: names in label order.
        cue_names: the columns of ``cues``.
    """

    images: np.ndarray
    labels: np.ndarray
    true_labels: np.ndarray
    masks: np.ndarray
    cue_masks: np.ndarray
    cues: np.ndarray
    own_cue: np.ndarray
    class_names: list[str] = field(default_factory=list)
    cue_names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def cue_flag(self, cue: str) -> np.ndarray:
        """bool ``(N,)``: images carrying ``cue``."""
        return self.cues[:, self.cue_names.index(cue)]


# ---------------------------------------------------------------- real images


@functools.cache
def _photo(name: str) -> np.ndarray:
    """float32 ``(H, W, 3)`` in [0, 1] of a bundled photograph (greyscale ones repeated to RGB)."""
    if name in ("china", "flower"):  # sklearn's sample photographs, read directly (importing sklearn is slow)
        from PIL import Image

        with Image.open(_sklearn_dir() / "datasets" / "images" / f"{name}.jpg") as pil:
            image = np.asarray(pil.convert("RGB"))
    else:
        import skimage.data

        image = getattr(skimage.data, name)()
    image = np.asarray(image, np.float32) / 255.0
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return image[..., :3]


@functools.cache
def _photo_scaled(name: str, factor: int) -> np.ndarray:
    """The photograph shrunk by an integer ``factor`` (box filter), float32 ``(H', W', 3)``."""
    from PIL import Image

    image = _photo(name)
    h, w = image.shape[:2]
    pil = Image.fromarray(np.round(image * 255).astype(np.uint8))
    small = pil.resize((max(w // factor, 8), max(h // factor, 8)), Image.BOX)
    return np.asarray(small, np.float32) / 255.0


def _crop(name: str, factor: int, size: int, u: float, v: float) -> np.ndarray:
    """A ``size`` x ``size`` crop of the photograph shrunk by ``factor``, at relative position (u, v).

    A photograph that the factor would shrink below ``size`` (the printed page at 48 px and up) is shrunk by the
    largest factor that still covers the crop; crops that fitted before are unchanged.

    Raises:
        ValueError: the photograph is smaller than ``size`` even unshrunk.
    """
    image = _photo_scaled(name, factor)
    while factor > 1 and min(image.shape[:2]) < size:
        factor -= 1
        image = _photo_scaled(name, factor)
    if min(image.shape[:2]) < size:
        raise ValueError(f"the photograph {name!r} ({image.shape[0]} x {image.shape[1]}) is smaller than a {size} px crop")
    h, w = image.shape[:2]
    y, x = int(u * (h - size)), int(v * (w - size))
    return image[y : y + size, x : x + size]


@functools.cache
def _texture_stats(name: str) -> tuple[float, float]:
    image = _photo(name)
    return float(image.mean()), float(image.std())


def _sklearn_dir():
    """The installed scikit-learn package folder (found without importing it)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("scikit-learn is not installed; the proving worlds use its bundled digits and photographs "
                          "(pip install scikit-learn)")
    return Path(spec.submodule_search_locations[0])


@functools.cache
def _digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 handwritten 8 x 8 digits of ``sklearn.datasets.load_digits``: float32 (N, 8, 8) in [0, 1], labels."""
    data = np.loadtxt(_sklearn_dir() / "datasets" / "data" / "digits.csv.gz", delimiter=",", dtype=np.float32)
    return data[:, :-1].reshape(-1, 8, 8) / 16.0, data[:, -1].astype(np.int64)


def _digit_pool(digit: int, split: str) -> np.ndarray:
    """Indices of handwritten ``digit`` instances for a split (train: 2 of every 3; val/test: the rest)."""
    _, targets = _digits()
    idx = np.flatnonzero(targets == digit)
    return idx[np.arange(len(idx)) % 3 != 0] if split == "train" else idx[np.arange(len(idx)) % 3 == 0]


@functools.cache
def _cat_patch(size: int) -> np.ndarray:
    """float32 ``(size, size, 3)``: the cat's face from ``skimage.data.chelsea``."""
    from PIL import Image

    face = _photo("chelsea")[20:230, 120:330]
    pil = Image.fromarray(np.round(face * 255).astype(np.uint8)).resize((size, size), Image.LANCZOS)
    return np.asarray(pil, np.float32) / 255.0


@functools.cache
def _tag_glyph(text: str = "R") -> np.ndarray:
    """bool ``(h, w)`` glyph of ``text`` in PIL's default font, cropped to its ink."""
    from PIL import Image, ImageDraw, ImageFont

    canvas = Image.new("L", (16, 16))
    ImageDraw.Draw(canvas).text((2, 0), text, fill=255, font=ImageFont.load_default())
    ink = np.asarray(canvas) > 96
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    return ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


@functools.cache
def _shape_area_coefficient(shape: str) -> float:
    """Area of ``shape`` at radius r, divided by r**2 (unit image side)."""
    r = 0.2
    mask = shape_mask(shape, 400, 0.5, 0.5, r, 0.3)
    return float(mask.mean()) / r**2


_SHAPE_EXTENT = {"circle": 1.0, "ring": 1.0, "square": 1.21, "diamond": 1.0, "plus": 1.1, "triangle": 1.1}


# ---------------------------------------------------------------- rendering


def sample_params(rng: np.random.Generator, world: ProvingWorld, obj: str, split: str) -> dict:
    """Every random choice of one image, drawn in a fixed order whatever its cues.

    Returns:
        A dict of plain numbers and small arrays consumed by :func:`render`.
    """
    size = world.image_size
    p: dict = {}
    p["grey"] = rng.uniform(0.35, 0.65)
    p["tilt"] = rng.normal(0, 0.08, size=2)
    p["tint"] = rng.normal(0, 0.03, size=3)
    p["backdrop"] = (int(rng.integers(len(BACKDROP_PHOTOS))), int(rng.integers(3, 7)), *rng.uniform(0, 1, size=2))
    p["texture"] = (int(rng.integers(3, 6)), *rng.uniform(0, 1, size=2))
    p["stripes"] = (np.pi / 4 + rng.uniform(-0.3, 0.3), rng.uniform(0.09, 0.14), rng.uniform(0, 2 * np.pi))
    p["clutter"] = [(*rng.uniform(0.05, 0.95, size=2), rng.uniform(0.02, 0.04), rng.uniform(0.1, 0.9, size=3))
                    for _ in range(int(rng.integers(0, 3)))]
    p["area"] = rng.uniform(*world.object_area)
    p["angle"] = rng.uniform(0, 2 * np.pi)
    p["centre"] = rng.uniform(0, 1, size=2)
    p["colour"] = int(rng.integers(len(COLOURS)))
    p["colour_jitter"] = rng.normal(0, 0.05, size=3)
    kind, value, _ = parse_object(obj)
    if kind == "digit":
        pool = _digit_pool(int(value), split)
        p["digit_index"] = int(pool[rng.integers(len(pool))])
    p["co_place"] = rng.uniform(0, 1, size=(50, 2))
    p["co_scale"] = rng.uniform(0.11, 0.15)
    p["tag_jitter"] = rng.uniform(0.85, 1.0)
    p["noise"] = rng.normal(0, world.noise, size=(size, size, 3)).astype(np.float32)
    return p


def _object_mask(world: ProvingWorld, obj: str, p: dict) -> tuple[np.ndarray, tuple[float, float, float]]:
    """bool ``(H, W)`` object mask and (cx, cy, extent) in unit coordinates."""
    size = world.image_size
    kind, value, _ = parse_object(obj)
    if kind == "shape":
        radius = float(np.sqrt(p["area"] / _shape_area_coefficient(value)))
        extent = radius * _SHAPE_EXTENT[value]
        margin = min(extent + 1.0 / size, 0.5)
        cx, cy = (margin + p["centre"] * (1 - 2 * margin))
        return shape_mask(value, size, cx, cy, radius, p["angle"]), (float(cx), float(cy), extent)
    from PIL import Image

    glyph = _digits()[0][p["digit_index"]]
    fill = max(float((glyph > 0.4).mean()), 0.1)
    side = int(np.clip(round(np.sqrt(p["area"] / fill) * size), 6, size - 2))
    big = np.asarray(Image.fromarray(np.round(glyph * 255).astype(np.uint8)).resize((side, side), Image.BILINEAR)) / 255.0
    x0 = int(round(1 + p["centre"][0] * (size - side - 2)))
    y0 = int(round(1 + p["centre"][1] * (size - side - 2)))
    mask = np.zeros((size, size), bool)
    mask[y0 : y0 + side, x0 : x0 + side] = big > 0.4
    half = side / 2 / size
    return mask, ((x0 + side / 2) / size, (y0 + side / 2) / size, half * 1.2)


def _co_place(p: dict, cx: float, cy: float, min_dist: float, margin: float) -> tuple[float, float]:
    for x, y in p["co_place"]:
        x, y = margin + x * (1 - 2 * margin), margin + y * (1 - 2 * margin)
        if np.hypot(x - cx, y - cy) >= min_dist:
            return float(x), float(y)
    return float(np.clip(1 - cx, margin, 1 - margin)), float(np.clip(1 - cy, margin, 1 - margin))


def render(world: ProvingWorld, obj: str, cues: dict[str, float], p: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw one image from its parameters.

    Args:
        world: the world.
        obj: the class object (``ProvingClass.obj``).
        cues: cue name -> strength in (0, 1] for the cues present (absent cues are left out).
        p: the image's parameters from :func:`sample_params`.

    Returns:
        ``(image float32 (H, W, 3) in [0, 1], object mask bool (H, W), localised-cue mask bool (H, W))``.
    """
    size = world.image_size
    xx, yy = _grid(size)
    if world.background == "photos":
        name, factor, u, v = p["backdrop"]
        image = _crop(BACKDROP_PHOTOS[name], factor, size, u, v).copy()
        image = 0.5 + 0.6 * (image - image.mean())  # tame the brightness range of the crop
    else:
        image = np.empty((size, size, 3), np.float32)
        image[:] = (p["grey"] + p["tilt"][0] * (xx - 0.5) + p["tilt"][1] * (yy - 0.5))[..., None]
    image = image.astype(np.float32) + p["tint"].astype(np.float32)

    for texture in TEXTURE_CUES:
        if texture in cues:
            factor, u, v = p["texture"]
            crop = _crop(texture, factor, size, u, v)
            mean, std = _texture_stats(texture)
            crop = 0.5 + 0.9 * (crop - mean) / max(std, 1e-3) * 0.18  # contrast-normalised real texture
            image = (1 - cues[texture]) * image + cues[texture] * crop
    if "stripes" in cues:
        angle, period, phase = p["stripes"]
        wave = np.sin(2 * np.pi * (np.cos(angle) * xx + np.sin(angle) * yy) / period + phase)
        image = image + (0.22 * cues["stripes"] * np.sign(wave))[..., None].astype(np.float32)

    for bx, by, radius, colour in p["clutter"]:
        image[(xx - bx) ** 2 + (yy - by) ** 2 <= radius**2] = colour

    mask, (cx, cy, extent) = _object_mask(world, obj, p)
    cue_mask = np.zeros((size, size), bool)
    if "tree" in cues:
        scale = p["co_scale"]
        tx, ty = _co_place(p, cx, cy, extent + scale + 0.03, scale + 0.03)
        crown, trunk = _tree_masks(size, tx, ty, scale)
        a = cues["tree"]
        image[crown] = (1 - a) * image[crown] + a * np.array((0.1, 0.55, 0.15), np.float32)
        image[trunk] = (1 - a) * image[trunk] + a * np.array((0.45, 0.28, 0.1), np.float32)
        cue_mask |= crown | trunk
    if "cat" in cues:
        side = max(int(round(p["co_scale"] * 2.3 * size)), 6)
        half = side / 2 / size
        tx, ty = _co_place(p, cx, cy, extent + half * 1.3 + 0.03, half + 1.0 / size)
        x0 = int(np.clip(round(tx * size - side / 2), 0, size - side))
        y0 = int(np.clip(round(ty * size - side / 2), 0, size - side))
        patch = _cat_patch(side)
        yy_p, xx_p = np.mgrid[0:side, 0:side]
        oval = ((xx_p + 0.5 - side / 2) / (side / 2)) ** 2 + ((yy_p + 0.5 - side / 2) / (side / 2)) ** 2 <= 1.0
        region = image[y0 : y0 + side, x0 : x0 + side]
        a = cues["cat"]
        region[oval] = (1 - a) * region[oval] + a * patch[oval]
        cue_mask[y0 : y0 + side, x0 : x0 + side] |= oval

    class_colour = parse_object(obj)[2]
    colour_name = class_colour if class_colour is not None else list(COLOURS)[p["colour"]]
    colour = np.asarray(COLOURS[colour_name], np.float32) + p["colour_jitter"].astype(np.float32)
    image[mask] = colour
    cue_mask &= ~mask
    if "watermark" in cues:
        glyph = _tag_glyph("TM")
        h, w = glyph.shape
        half = max(h, w) / 2 / size
        placement = {**p, "co_place": p["co_place"][_WATERMARK_PLACES]}
        tx, ty = _co_place(placement, cx, cy, extent + half + 0.04, half + 1.0 / size)
        x0 = int(np.clip(round(tx * size - w / 2), 0, size - w))
        y0 = int(np.clip(round(ty * size - h / 2), 0, size - h))
        stamp = np.zeros((size, size), bool)
        stamp[y0 : y0 + h, x0 : x0 + w] = glyph
        stamp &= ~mask
        a = 0.6 * cues["watermark"] * p["tag_jitter"]
        image[stamp] = (1 - a) * image[stamp] + a * 1.0
        cue_mask |= stamp

    for cast, (gain, offset) in {"warm": ((1.25, 0.95, 0.6), (0.08, 0.03, 0.0)),
                                 "cool": ((0.65, 0.95, 1.25), (0.0, 0.03, 0.08))}.items():
        if cast in cues:
            a = cues[cast]
            gain_a = 1 + a * (np.asarray(gain, np.float32) - 1)
            image = image * gain_a + a * np.asarray(offset, np.float32)

    if "vignette" in cues:
        radius = np.hypot(xx - 0.5, yy - 0.5)
        darkening = cues["vignette"] * 0.65 * np.clip((radius - 0.3) / 0.4, 0, 1)
        image = image * (1 - darkening)[..., None].astype(np.float32)

    image = image + p["noise"]
    if "border" in cues:
        frame = np.zeros((size, size), bool)
        frame[:2], frame[-2:], frame[:, :2], frame[:, -2:] = True, True, True, True
        a = cues["border"]
        image[frame] = (1 - a) * image[frame] + a * np.array((0.95, 0.85, 0.1), np.float32)
        cue_mask |= frame
        mask &= ~frame
    if "tag" in cues:
        glyph = _tag_glyph()
        h, w = glyph.shape
        tag = np.zeros((size, size), bool)
        tag[2 : 2 + h, 2 : 2 + w] = glyph
        a = cues["tag"] * p["tag_jitter"]
        image[tag] = (1 - a) * image[tag] + a * 1.0
        cue_mask |= tag
        mask &= ~tag
    return np.clip(image, 0, 1), mask, cue_mask


def generate_split(world: ProvingWorld, split: str) -> ProvingSplit:
    """Generate one split of a proving world.

    Args:
        world: the world's parameters.
        split: ``"train"``, ``"val"`` or ``"test"``.

    Returns:
        A :class:`ProvingSplit` with images grouped by class (class 0 first).

    Raises:
        ValueError: for an unknown split.
    """
    if split not in SPLIT_OFFSETS:
        raise ValueError(f"split must be one of {list(SPLIT_OFFSETS)}; got {split!r}")
    rng = np.random.default_rng([world.seed, SPLIT_OFFSETS[split]])
    per_class = {"train": world.n_train, "val": world.n_val, "test": world.n_test}[split]
    k, size, cue_names = len(world.classes), world.image_size, list(world.cues)
    n = per_class * k
    labels = np.repeat(np.arange(k), per_class).astype(np.int64)
    out = ProvingSplit(
        images=np.empty((n, size, size, 3), np.uint8),
        labels=labels,
        true_labels=labels.copy(),
        masks=np.zeros((n, size, size), bool),
        cue_masks=np.zeros((n, size, size), bool),
        cues=np.zeros((n, len(cue_names)), bool),
        own_cue=np.zeros(n, bool),
        class_names=world.class_names,
        cue_names=cue_names,
    )
    strength = {c.cue: c.strength for c in world.classes if c.cue is not None}
    for i in range(n):
        cls = world.classes[labels[i]]
        for j, cue in enumerate(cue_names):
            if split == "train":
                rate = cls.cue_rate if cls.cue == cue else world.cue_rate_other_train
            else:
                rate = world.cue_rate_eval
            out.cues[i, j] = rng.random() < rate
        out.own_cue[i] = cls.cue is not None and bool(out.cues[i, cue_names.index(cls.cue)])
        params = sample_params(rng, world, cls.obj, split)
        present = {cue: strength[cue] for j, cue in enumerate(cue_names) if out.cues[i, j]}
        image, mask, cue_mask = render(world, cls.obj, present, params)
        out.images[i] = np.round(image * 255).astype(np.uint8)
        out.masks[i] = mask
        out.cue_masks[i] = cue_mask
    return out
