"""Procedural captioned RGB scenes of 1-2 shapes with ground-truth attributes: imgen's text-to-image data.

Item i of a stream is a pure function of (seed, i) (counter-based hashing, no state, nothing cached), so the
stream is infinite and any batch of indices renders the same pixels and captions every time.

Generalisation splits: the (shape, colour) pairs in HELDOUT_PAIRS never appear in split="train" (neither
object); in split="heldout" the main object always has one of them. Caption templates are split the same
way: TRAIN_TEMPLATES for "train", HELDOUT_TEMPLATES only for "heldout". With bg_captions=p (recaptioning), a
train caption whose template leaves the background out names it anyway with probability p (RECAPTIONED).

The vocabulary, `make_caption` and `render_scenes` are public so a prompt generator and a text-to-image
evaluator can build prompts and reference images from attributes.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np
import torch

from imgen.data.base import as_index, check_choice, check_image_size, hash_uniform
from imgen.errors import ImgenError, check_int
from imgen.images import adapt_images

# ---- vocabulary ----
SHAPES = ("circle", "square", "triangle", "star", "cross")
COLORS = {  # name -> RGB (0..255), chosen to stay distinct from each other and from every background
    "red": (230, 30, 30), "orange": (255, 140, 0), "yellow": (250, 230, 40), "green": (40, 190, 50),
    "cyan": (0, 220, 230), "blue": (40, 80, 255), "magenta": (235, 45, 210), "white": (245, 245, 245),
}
BACKGROUNDS = {"black": (0, 0, 0), "gray": (85, 85, 85), "navy": (15, 20, 75), "brown": (80, 45, 20)}
SIZES = ("small", "large")
POSITIONS = ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right")
COLOR_NAMES = tuple(COLORS)
BACKGROUND_NAMES = tuple(BACKGROUNDS)
ATTRIBUTES = ("shape", "color", "size", "pos", "bg", "n_objects", "shape2", "color2", "size2", "pos2")
# (shape, colour) pairs only in split="heldout": two per shape, every colour still seen with >= 3 shapes in train
HELDOUT_PAIRS = (("circle", "red"), ("circle", "cyan"), ("square", "green"), ("square", "white"),
                 ("triangle", "yellow"), ("triangle", "magenta"), ("star", "orange"), ("star", "blue"),
                 ("cross", "red"), ("cross", "cyan"))

# ---- caption synonyms ----
SHAPE_WORDS = {"circle": ("circle", "disk", "round dot"), "square": ("square", "box", "block"),
               "triangle": ("triangle", "three-sided shape"), "star": ("star", "five-pointed star"),
               "cross": ("cross", "plus sign", "plus")}
COLOR_WORDS = {"red": ("red", "crimson", "scarlet"), "orange": ("orange", "tangerine"),
               "yellow": ("yellow", "golden", "lemon"), "green": ("green", "emerald", "grass-green"),
               "cyan": ("cyan", "turquoise", "aqua"), "blue": ("blue", "cobalt", "sapphire"),
               "magenta": ("magenta", "pink", "fuchsia"), "white": ("white", "snowy", "ivory")}
BACKGROUND_WORDS = {"black": ("black", "dark"), "gray": ("gray", "grey", "slate"),
                    "navy": ("navy", "dark blue"), "brown": ("brown", "chocolate")}
SIZE_WORDS = {"small": ("small", "tiny", "little"), "large": ("large", "big", "huge")}
POSITION_PHRASES = (  # "... {pos}" in a sentence
    ("in the top left", "in the upper left corner", "at the top left"),
    ("at the top", "in the top middle", "at the top center"),
    ("in the top right", "in the upper right corner", "at the top right"),
    ("on the left", "at the middle left", "on the left side"),
    ("in the center", "in the middle", "at the center"),
    ("on the right", "at the middle right", "on the right side"),
    ("in the bottom left", "in the lower left corner", "at the bottom left"),
    ("at the bottom", "in the bottom middle", "at the bottom center"),
    ("in the bottom right", "in the lower right corner", "at the bottom right"),
)
POSITION_LABELS = ("top-left", "top", "top-right", "left", "center", "right", "bottom-left", "bottom", "bottom-right")

# (main object, each further object) format strings; fields: size color shape pos label bg
TEMPLATES = (
    ("a {size} {color} {shape} {pos}", " and a {size} {color} {shape} {pos}"),
    ("{label}: {size} {color} {shape}", "; {label}: {size} {color} {shape}"),
    ("a {color} {shape} {pos} on a {bg} background", ", plus a {color} {shape} {pos}"),
    ("there is a {size} {color} {shape} {pos}", " and a {size} {color} {shape} {pos}"),
    ("{pos}, a {size} {color} {shape}", "; {pos}, a {size} {color} {shape}"),
    ("a picture of a {size} {color} {shape} {pos}", " and a {size} {color} {shape} {pos}"),
    # held-out templates (split="heldout" only)
    ("{size} {color} {shape}, {label}", " / {size} {color} {shape}, {label}"),
    ("a {shape} that is {color} and {size}, {pos}", "; a {shape} that is {color} and {size}, {pos}"),
    ("{bg} background with a {size} {color} {shape} {pos}", " and a {size} {color} {shape} {pos}"),
)
TRAIN_TEMPLATES = (0, 1, 2, 3, 4, 5)
HELDOUT_TEMPLATES = (6, 7, 8)
# Descriptive recaptions (Betker et al. 2023, "Improving Image Generation with Better Captions"): each train
# template that leaves the background out, with it named after the main object. bg_captions=p serves one of these
# in place of the plain caption with probability p; they are train phrasing, never drawn as held-out templates.
RECAPTIONED = {t: len(TEMPLATES) + i for i, t in enumerate(t for t in TRAIN_TEMPLATES if "{bg}" not in TEMPLATES[t][0])}
TEMPLATES += tuple((TEMPLATES[t][0] + " on a {bg} background", TEMPLATES[t][1]) for t in RECAPTIONED)

# ---- geometry (fractions of a grid cell; a cell is image_size / 3) ----
SIZE_RADIUS = (0.3, 0.46)  # object radius for small / large
MAX_JITTER = 0.3  # centre jitter as a fraction of the free space (0.5 - radius) around the object

_SHAPE_ID = {s: i for i, s in enumerate(SHAPES)}
_COLOR_ID = {c: i for i, c in enumerate(COLOR_NAMES)}
_PALETTE = np.array(list(COLORS.values()), np.float32) / 127.5 - 1  # (8, 3) in [-1, 1]
_BG_PALETTE = np.array(list(BACKGROUNDS.values()), np.float32) / 127.5 - 1


def _pair_table(held: bool) -> np.ndarray:
    """(n_shapes, k) table of the colours allowed with each shape in the held-out (or train) pairs."""
    heldout = {(_SHAPE_ID[s], _COLOR_ID[c]) for s, c in HELDOUT_PAIRS}
    rows = [[c for c in range(len(COLORS)) if ((s, c) in heldout) == held] for s in range(len(SHAPES))]
    assert len({len(r) for r in rows}) == 1, "HELDOUT_PAIRS must hold out the same number of colours per shape"
    return np.array(rows, np.int64)


_TRAIN_COLORS, _HELDOUT_COLORS = _pair_table(False), _pair_table(True)


# ---- sampling attributes ----
def sample_scene_attributes(seed: int, idx, split: str = "train", max_objects: int = 2,
                            templates: str | None = None, bg_captions: float = 0.0) -> dict[str, np.ndarray]:
    """Attributes of items `idx` of the stream `seed`: a dict of (B,) int64 arrays (ATTRIBUTES, -1 for an
    absent second object) plus `offset` (B, 2, 2) centre jitter in cells, `template` and `variant` for captions.
    bg_captions: the probability that a train template without the background is swapped for its RECAPTIONED
    form, which names it."""
    idx = np.asarray(idx, np.int64)
    u = lambda stream: hash_uniform(seed, idx, stream)  # noqa: E731
    pick = lambda stream, k: np.minimum((u(stream) * k).astype(np.int64), k - 1)  # noqa: E731
    n_shapes, n_colors = len(SHAPES), len(COLORS)

    def shape_color(stream, which):
        shape = pick(stream, n_shapes)
        if which == "all":
            return shape, pick(stream + 1, n_colors)
        table = _TRAIN_COLORS if which == "train" else _HELDOUT_COLORS
        return shape, table[shape, pick(stream + 1, table.shape[1])]

    a = {}
    a["shape"], a["color"] = shape_color(0, split)
    a["size"] = pick(2, len(SIZES))
    a["pos"] = pick(3, len(POSITIONS))
    a["bg"] = pick(4, len(BACKGROUNDS))
    a["n_objects"] = 1 + (pick(5, 2) if max_objects == 2 else np.zeros_like(idx))
    two = a["n_objects"] == 2
    shape2, color2 = shape_color(6, "all" if split == "all" else "train")  # only the main object is novel
    a["shape2"] = np.where(two, shape2, -1)
    a["color2"] = np.where(two, color2, -1)
    a["size2"] = np.where(two, pick(8, len(SIZES)), -1)
    a["pos2"] = np.where(two, (a["pos"] + 1 + pick(9, len(POSITIONS) - 1)) % len(POSITIONS), -1)
    offset = np.stack([u(10 + k) for k in range(4)], -1).reshape(-1, 2, 2) * 2 - 1  # (B, object, xy) in [-1, 1]
    radius = np.array(SIZE_RADIUS)[np.stack([a["size"], np.maximum(a["size2"], 0)], -1)]
    a["offset"] = offset * (MAX_JITTER * (0.5 - radius))[..., None]
    which = {"train": TRAIN_TEMPLATES, "heldout": HELDOUT_TEMPLATES,
             "all": TRAIN_TEMPLATES + HELDOUT_TEMPLATES}[templates or split]
    a["template"] = np.array(which, np.int64)[pick(14, len(which))]
    if bg_captions:
        recaption = np.arange(len(TEMPLATES))
        recaption[list(RECAPTIONED)] = list(RECAPTIONED.values())
        a["template"] = np.where(u(16) < bg_captions, recaption[a["template"]], a["template"])
    a["variant"] = (u(15) * 2 ** 31).astype(np.int64)
    return a


# ---- captions ----
def _mix(variant: int, k: int) -> int:
    """A small integer hash, so that each word slot of a caption picks its synonym independently."""
    z = (variant * 0x9E3779B1 + k * 0x85EBCA77) & 0xFFFFFFFF
    z = ((z ^ (z >> 16)) * 0x45D9F3B) & 0xFFFFFFFF
    return z ^ (z >> 16)


def _object_words(shape: int, color: int, size: int, pos: int, variant: int, slot: int) -> dict[str, str]:
    choose = lambda words, k: words[_mix(variant, 8 * slot + k) % len(words)]  # noqa: E731
    return {"shape": choose(SHAPE_WORDS[SHAPES[shape]], 0), "color": choose(COLOR_WORDS[COLOR_NAMES[color]], 1),
            "size": choose(SIZE_WORDS[SIZES[size]], 2), "pos": choose(POSITION_PHRASES[pos], 3),
            "label": POSITION_LABELS[pos]}


def make_caption(attrs: Mapping[str, int], template: int = 0, variant: int = 0) -> str:
    """Caption of one scene from its attributes (shape, color, size, pos, bg[, n_objects, shape2, color2,
    size2, pos2]) as int ids; `template` indexes TEMPLATES, `variant` picks the synonyms deterministically."""
    if not 0 <= template < len(TEMPLATES):
        raise ImgenError(f"caption template {template} does not exist; use 0..{len(TEMPLATES) - 1}")
    try:
        first, further = TEMPLATES[template]
        bg = BACKGROUND_WORDS[BACKGROUND_NAMES[int(attrs.get("bg", 0))]]
        bg_word = bg[_mix(variant, 7) % len(bg)]
        text = first.format(bg=bg_word, **_object_words(int(attrs["shape"]), int(attrs["color"]),
                                                        int(attrs["size"]), int(attrs["pos"]), variant, 0))
        if int(attrs.get("n_objects", 1)) == 2:
            text += further.format(bg=bg_word, **_object_words(int(attrs["shape2"]), int(attrs["color2"]),
                                                               int(attrs["size2"]), int(attrs["pos2"]), variant, 1))
    except (KeyError, IndexError) as e:
        raise ImgenError(f"cannot caption scene attributes {dict(attrs)}: bad or missing {e}; "
                         f"give int ids for {ATTRIBUTES[:5]} (and shape2..pos2 when n_objects=2)") from None
    return re.sub(r"\b([Aa]) (?=[aeiou])", r"\1n ", text)  # "a orange" -> "an orange"


def stated_attributes(template: int, n_objects: int = 1) -> frozenset[str]:
    """The attributes a caption written with `template` names: shape and colour always; size, position ({pos} or
    the {label} form) and background where its format strings have the field; shape2..pos2 for a second object.
    A prompt-adherence score counts only these (an attribute the prompt leaves out is free)."""
    if not 0 <= template < len(TEMPLATES):
        raise ImgenError(f"caption template {template} does not exist; use 0..{len(TEMPLATES) - 1}")
    first, further = TEMPLATES[template]
    fields = lambda fmt: {"size": "{size}" in fmt, "pos": "{pos}" in fmt or "{label}" in fmt,  # noqa: E731
                          "bg": "{bg}" in fmt}
    stated = {"shape", "color"} | {k for k, v in fields(first).items() if v}
    if n_objects == 2:
        stated |= {"shape2", "color2"} | {k + "2" for k, v in fields(further).items() if v and k != "bg"}
    return frozenset(stated)


def scene_captions(a: Mapping) -> list[str]:
    """The caption of every scene in a batch of attributes from sample_scene_attributes (its `template` and
    `variant` pick the wording)."""
    return [make_caption({k: a[k][i] for k in ATTRIBUTES}, int(a["template"][i]), int(a["variant"][i]))
            for i in range(len(a["shape"]))]


# ---- per-cell targets ----
EMPTY = len(SHAPES)  # cell_shape class of a grid cell that holds no object


def cell_attributes(a: Mapping) -> dict[str, np.ndarray]:
    """What each of the 9 grid cells holds, from scene attributes: cell_shape (B, 9) the shape id of the object in
    the cell or EMPTY; cell_color, cell_size (B, 9) its colour and size ids, -1 in an empty cell (a loss ignores
    them). The objects of a scene never share a cell, so each cell holds at most one."""
    b = len(a["shape"])
    out = {"cell_shape": np.full((b, len(POSITIONS)), EMPTY, np.int64)}
    out["cell_color"], out["cell_size"] = np.full_like(out["cell_shape"], -1), np.full_like(out["cell_shape"], -1)
    n_objects = np.asarray(a.get("n_objects", np.ones(b, np.int64)))
    for suffix, j in (("", 1), ("2", 2)):
        rows = np.flatnonzero(n_objects >= j)
        pos = np.asarray(a["pos" + suffix])[rows]
        for k in ("shape", "color", "size"):
            out["cell_" + k][rows, pos] = np.asarray(a[k + suffix])[rows]
    return out


# ---- rendering ----
def _inside(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean mask of one shape in local coordinates (units of the object radius, v pointing down)."""
    if shape == 0:  # circle
        return u * u + v * v <= 1.0
    if shape == 1:  # square, half-side 0.85 so its area is close to the circle's
        return np.maximum(np.abs(u), np.abs(v)) <= 0.85
    if shape == 2:  # equilateral triangle pointing up, circumradius R, centroid at the centre
        r_in, y = 1.15 / 2, -v  # inradius = circumradius / 2
        return (-y <= r_in) & (0.8660254 * u + 0.5 * y <= r_in) & (-0.8660254 * u + 0.5 * y <= r_in)
    if shape == 3:  # five-pointed star, tip up: fold the angle into one half-spike, test one edge
        outer, inner = 1.15, 1.15 * 0.45
        rho, phi = np.hypot(u, v), np.arctan2(u, -v) % np.float32(2 * np.pi / 5)
        b = np.minimum(phi, np.float32(2 * np.pi / 5) - phi)  # angle from the nearest tip, in [0, pi/5]
        qx, qy = rho * np.cos(b), rho * np.sin(b)
        bx, by = inner * np.cos(np.pi / 5), inner * np.sin(np.pi / 5)
        return (bx - outer) * qy - by * (qx - outer) >= 0  # on the centre's side of the edge tip -> inner vertex
    if shape == 4:  # cross (plus sign)
        au, av = np.abs(u), np.abs(v)
        return ((au <= 0.33) & (av <= 0.95)) | ((av <= 0.33) & (au <= 0.95))
    raise ImgenError(f"unknown shape id {shape}; use 0..{len(SHAPES) - 1} ({', '.join(SHAPES)})")


def _coverage(shape, cx, cy, radius, size: int, ss: int, k: int):
    """Anti-aliased coverage of B objects: (B, k, k) windows and their top-left pixel (x0, y0).

    Each object is rasterised only in a k x k pixel window around it, at ss x ss samples per pixel."""
    x0, y0 = np.floor(cx).astype(np.int64) - k // 2, np.floor(cy).astype(np.int64) - k // 2
    sub = (np.arange(k * ss) + 0.5) / ss  # sample offsets inside the window, in pixels
    u = ((x0[:, None, None] + sub[None, None, :] - cx[:, None, None]) / radius[:, None, None]).astype(np.float32)
    v = ((y0[:, None, None] + sub[None, :, None] - cy[:, None, None]) / radius[:, None, None]).astype(np.float32)
    # u: (B, 1, k*ss), v: (B, k*ss, 1)
    cov = np.zeros((len(shape), k, k), np.float32)
    for s in np.unique(shape):
        m = shape == s
        mask = _inside(int(s), u[m], v[m]).astype(np.float32)
        cov[m] = mask.reshape(-1, k, ss, k, ss).mean((2, 4))
    return cov, x0, y0


def render_scenes(attrs: Mapping, image_size: int = 32, offsets=None, supersample: int = 4,
                  palette: np.ndarray | None = None) -> torch.Tensor:
    """Render scenes from attributes -> (B, 3, image_size, image_size) float32 in [-1, 1].

    `attrs` maps the ATTRIBUTES names to ints or (B,) int arrays (second object only where n_objects == 2;
    n_objects defaults to 1); `offsets` (B, 2, 2) moves each object's centre by that fraction of a cell.
    `palette` (K, 3) in [-1, 1] replaces the colours: "color" ids index it (imgen.data.translation's label maps)."""
    colors = _PALETTE if palette is None else np.asarray(palette, np.float32)
    a = {k: np.atleast_1d(np.asarray(attrs[k], np.int64)) for k in attrs if k in ATTRIBUTES}
    for k in ("shape", "color", "size", "pos"):
        if k not in a:
            raise ImgenError(f"render_scenes needs attribute {k!r}; give int ids for {ATTRIBUTES[:4]}")
    b = len(a["shape"])
    if b == 0:
        return torch.zeros(0, 3, image_size, image_size)
    a.setdefault("bg", np.zeros(b, np.int64))
    a.setdefault("n_objects", np.ones(b, np.int64))
    limits = {"shape": len(SHAPES), "color": len(colors), "size": len(SIZES), "pos": len(POSITIONS),
              "bg": len(BACKGROUNDS), "n_objects": 3}
    for k, hi in limits.items():
        if a[k].min() < (1 if k == "n_objects" else 0) or a[k].max() >= hi:
            raise ImgenError(f"render_scenes: attribute {k!r} has value {a[k].min()}..{a[k].max()}, "
                             f"valid ids are {'1..2' if k == 'n_objects' else f'0..{hi - 1}'}")
    offsets = np.zeros((b, 2, 2)) if offsets is None else np.asarray(offsets, np.float64).reshape(b, 2, 2)
    cell = image_size / 3
    k = int(np.ceil(1.2 * cell)) + 2  # window covers the largest object (1.15 x 0.46 cell) plus jitter
    img = np.broadcast_to(_BG_PALETTE[a["bg"]][:, None, None, :], (b, image_size, image_size, 3)).copy()
    layers = [("", 0)] + ([("2", 1)] if (a["n_objects"] == 2).any() else [])
    for suffix, j in layers:
        rows = np.flatnonzero(a["n_objects"] >= j + 1)
        shape, pos = a["shape" + suffix][rows], a["pos" + suffix][rows]
        cx = (pos % 3 + 0.5 + offsets[rows, j, 0]) * cell
        cy = (pos // 3 + 0.5 + offsets[rows, j, 1]) * cell
        radius = np.array(SIZE_RADIUS)[a["size" + suffix][rows]] * cell
        cov, x0, y0 = _coverage(shape, cx, cy, radius, image_size, supersample, k)
        alpha = np.zeros((len(rows), image_size + 2 * k, image_size + 2 * k), np.float32)  # padded canvas
        r = np.arange(k)
        alpha[np.arange(len(rows))[:, None, None], (y0 + k)[:, None, None] + r[None, :, None],
              (x0 + k)[:, None, None] + r[None, None, :]] = cov
        alpha = alpha[:, k:k + image_size, k:k + image_size, None]
        color = colors[a["color" + suffix][rows]][:, None, None, :]
        img[rows] = img[rows] * (1 - alpha) + color * alpha
    return torch.from_numpy(np.ascontiguousarray(img.transpose(0, 3, 1, 2)))


class ShapesDataset:
    """Infinite stream of captioned shape scenes; `len` is the epoch length `n`, any index >= 0 is valid."""

    name = "shapes"
    channels = 3
    infinite = True  # any index >= 0 is a fresh item; len() is only the epoch length
    num_classes = len(SHAPES)  # `label` is the main object's shape

    def __init__(self, n: int = 10000, image_size: int = 32, seed: int = 0, split: str = "train",
                 max_objects: int = 2, templates: str | None = None, supersample: int = 4, twins: bool = False,
                 cells: bool = False, low_res: int | None = None, downsample: int | None = None,
                 bg_captions: float = 0.0):
        self.image_size = check_image_size(image_size, "shapes")
        if self.image_size is None or self.image_size < 12:
            raise ImgenError(f"shapes: image_size={image_size} is too small to tell shapes apart; use >= 12 (16 or 32)")
        self.split = check_choice(split, ("train", "heldout", "all"), "split", "shapes")
        self.templates = check_choice(templates, (None, "train", "heldout", "all"), "templates", "shapes")
        self.max_objects = check_choice(max_objects, (1, 2), "max_objects", "shapes")
        check_int(n, "shapes: n (the epoch length)")
        if not isinstance(supersample, (int, np.integer)) or not 1 <= supersample <= 16:
            raise ImgenError(f"shapes: supersample must be an integer in [1, 16], got {supersample!r}")
        if not isinstance(twins, bool):
            raise ImgenError(f"shapes: twins must be true or false, got {twins!r}")
        if not isinstance(cells, bool) or (cells and twins):
            raise ImgenError(f"shapes: cells must be true or false and not combined with twins, got {cells!r}")
        self.n, self.seed, self.supersample, self.twins = int(n), int(seed), int(supersample), twins
        if isinstance(bg_captions, bool) or not isinstance(bg_captions, (int, float)) or not 0 <= bg_captions <= 1:
            raise ImgenError(f"shapes: bg_captions is a probability in [0, 1] (e.g. 0.6), got {bg_captions!r}")
        self.bg_captions = float(bg_captions)  # recaptioning: how often a caption names the background
        self.cells = cells  # attrs also hold the per-cell targets (cell_attributes), (B, 9) each
        if low_res is not None and (not isinstance(low_res, int) or isinstance(low_res, bool) or low_res < 1
                                    or self.image_size % low_res or low_res == self.image_size):
            raise ImgenError(f"shapes: low_res must be an integer size dividing image_size={self.image_size} and "
                             f"smaller than it (e.g. {self.image_size // 4}), got {low_res!r}")
        self.low_res = low_res  # batches also hold "low_res": the image area-averaged to low_res px (SR3's pairs)
        if downsample is not None and (not isinstance(downsample, int) or isinstance(downsample, bool)
                                       or downsample < 1 or self.image_size % downsample or low_res is not None):
            raise ImgenError(f"shapes: downsample must be an integer size dividing image_size={self.image_size} "
                             f"(e.g. {self.image_size // 4}) and not combined with low_res, got {downsample!r}")
        self.render_size = self.image_size
        if downsample is not None:  # scenes rendered at image_size, served area-averaged (a cascade's base stage)
            self.image_size = downsample
        self.class_names = list(SHAPES)

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return f"ShapesDataset(n={self.n}, image_size={self.image_size}, seed={self.seed}, split={self.split!r})"

    def attributes(self, idx) -> dict[str, np.ndarray]:
        """The raw attributes of items `idx` (see sample_scene_attributes)."""
        return sample_scene_attributes(self.seed, as_index(idx, None, self.name), self.split, self.max_objects,
                                       self.templates, self.bg_captions)

    def captions(self, idx) -> list[str]:
        """The captions of items `idx`, without rendering the images."""
        return scene_captions(self.attributes(idx))

    def get(self, idx) -> dict:
        """Items `idx`; with twins=True the first ceil(B/2) items of idx followed by their counterfactual twins
        (twin_batch), B in all, the twins drawn from an RNG seeded by (seed, idx[0], B)."""
        if self.twins:
            idx = as_index(idx, None, self.name)
            if len(idx) < 2:
                raise ImgenError("shapes with twins=True serves batches of >= 2 items (each item and its twin)")
            rng = np.random.default_rng([self.seed, int(idx[0]), len(idx)])
            batch = twin_batch(self, idx[: (len(idx) + 1) // 2], rng)
            return {k: v[: len(idx)] if k != "attrs" else {a: t[: len(idx)] for a, t in v.items()}
                    for k, v in batch.items()}
        return self.scenes(self.attributes(idx))

    def scenes(self, a: Mapping) -> dict:
        """The batch of scenes with attributes `a` (sample_scene_attributes): rendered images, captions, attrs
        (with the per-cell targets when cells=True) and label (the main object's shape)."""
        image = render_scenes(a, self.render_size, a["offset"], self.supersample)
        if self.image_size != self.render_size:
            image = adapt_images(image, self.channels, self.image_size)  # area average
        attrs = {k: torch.from_numpy(a[k]) for k in ATTRIBUTES}
        if self.cells:
            attrs.update({k: torch.from_numpy(v) for k, v in cell_attributes(a).items()})
        out = {"image": image, "label": attrs["shape"].clone(), "caption": scene_captions(a), "attrs": attrs}
        if self.low_res:
            out["low_res"] = adapt_images(image, self.channels, self.low_res)  # area average (box filter)
        return out


def twin_batch(data, idx: np.ndarray, rng: np.random.Generator) -> dict:
    """Items `idx` of a shapes stream followed by one counterfactual twin each: the same scene with one stated thing
    changed, the caption rewritten to match, so a batch holds hard negatives that only that thing tells apart (hard
    negatives for compositional CLIP: Yuksekgonul et al. 2023, NegCLIP; here both the image and the caption of the
    negative are real). The change is drawn uniformly from those that apply: the main object's shape or colour (to
    another train pair); the background, when the caption names it; and in a two-object scene the two objects'
    colours or shapes swapped (attribute binding: "a red circle and a blue square" vs "a blue circle and a red
    square"). Only stated attributes change, so a twin's caption always differs. -> {"image", "caption", "attrs"}."""
    a = data.attributes(idx)
    twin = {k: v.copy() for k, v in a.items()}
    heldout = {(SHAPES.index(s), COLOR_NAMES.index(c)) for s, c in HELDOUT_PAIRS}
    for i in range(len(idx)):
        shape, color, two = int(a["shape"][i]), int(a["color"][i]), int(a["n_objects"][i]) == 2
        options = [[{"shape": s} for s in range(len(SHAPES)) if s != shape and (s, color) not in heldout],
                   [{"color": c} for c in range(len(COLOR_NAMES)) if c != color and (shape, c) not in heldout]]
        if "bg" in stated_attributes(int(a["template"][i]), int(a["n_objects"][i])):
            options.append([{"bg": b} for b in range(len(BACKGROUNDS)) if b != a["bg"][i]])
        shape2, color2 = int(a["shape2"][i]), int(a["color2"][i])
        if two and color2 != color and (shape, color2) not in heldout:
            options.append([{"color": color2, "color2": color}])
        if two and shape2 != shape and (shape2, color) not in heldout:
            options.append([{"shape": shape2, "shape2": shape}])
        kind = options[rng.integers(len(options))]
        for key, value in kind[rng.integers(len(kind))].items():
            twin[key][i] = value
    return data.scenes({k: np.concatenate([a[k], twin[k]]) for k in a})
