"""Prompt adherence of a text-to-image model on the shapes world, measured exactly.

Prompts describe one object (or, with max_objects=2, two objects) whose main (shape, colour) pair is held out of
split="train" (HELDOUT_PAIRS), written with the held-out caption templates, and are compared with what an
evaluator net reads in each generated image, over the attributes the prompt states (a template that names no
background leaves the background free):
- one object: `shapes-eval` (100% on real held-out scenes) reads shape, colour, position, size and background;
- two objects: `shapes-cells` (>= 99% per attribute on real held-out scenes) reads every cell of the 3x3 grid, so
  each object is read in the cell its prompt puts it in: object 1 at `pos`, object 2 at `pos2`, and a colour
  swapped between the two objects (an attribute-binding failure) counts as wrong.
`adherence(model, n=...)` returns the rates; `adherence_prompts` the prompts and truths; `inpaint_tasks` the
same prompts as inpainting tasks (imgen.apps: the hole over an object the prompt does not describe).
"""
from __future__ import annotations

import numpy as np
import torch

from imgen.data.masks import object_box_holes
from imgen.data.shapes import BACKGROUND_NAMES, COLORS, EMPTY, SHAPES, render_scenes, sample_scene_attributes, \
    scene_captions, stated_attributes
from imgen.errors import ImgenError

HELDOUT_SEED = 1_000_003  # a stream no training run uses
READ = ("shape", "color", "pos", "size", "bg")  # what one-object scoring reads (shapes-eval)
READ2 = READ + ("shape2", "color2", "pos2", "size2")  # two-object scoring (shapes-cells)


def adherence_scenes(n: int, seed: int = HELDOUT_SEED, split: str = "heldout", templates: str = "heldout",
                     max_objects: int = 1) -> dict[str, np.ndarray]:
    """The attributes (sample_scene_attributes) of the n adherence scenes: items 0..n-1 of the stream `seed` with
    max_objects=1; with max_objects=2 the first n two-object items of the stream (every prompt names two)."""
    if max_objects == 1:
        return sample_scene_attributes(seed, np.arange(n), split, max_objects=1, templates=templates)
    if max_objects != 2:
        raise ImgenError(f"adherence prompts have 1 or 2 objects, got max_objects={max_objects!r}")
    pool = 2 * n + 64
    while True:  # about half the stream's items have two objects
        a = sample_scene_attributes(seed, np.arange(pool), split, max_objects=2, templates=templates)
        two = np.flatnonzero(a["n_objects"] == 2)
        if len(two) >= n:
            return {k: v[two[:n]] for k, v in a.items()}
        pool *= 2


def adherence_prompts(n: int, seed: int = HELDOUT_SEED, split: str = "heldout", templates: str = "heldout",
                      max_objects: int = 1) -> tuple[list[str], dict[str, np.ndarray]]:
    """n prompts (held-out main (shape, colour) pairs and templates by default) and their attributes, with
    `stated` (n, len(READ)) bool: which attributes each prompt names. max_objects=2 gives n two-object prompts
    (not a mix: the one-object case is max_objects=1) with READ2 attributes and `stated` (n, len(READ2))."""
    a = adherence_scenes(n, seed, split, templates, max_objects)
    keys = READ if max_objects == 1 else READ2
    stated = np.array([[k in stated_attributes(int(t), max_objects) for k in keys] for t in a["template"]],
                      dtype=bool)
    return scene_captions(a), {**{k: a[k] for k in keys}, "stated": stated}


def inpaint_tasks(n: int, image_size: int = 32, seed: int = HELDOUT_SEED):
    """(prompts, truth, inputs (n, 3, H, W), holes (n, H, W) bool) for inpainting under adherence_prompts(n): each
    input is the prompt's scene drawn with ANOTHER shape and colour (same size, position, jitter and background),
    the hole a square over the object (0.8 cell either side of its centre), so the prompt's object must be drawn."""
    prompts, truth = adherence_prompts(n, seed)
    a = adherence_scenes(n, seed)
    other = {**a, "shape": (a["shape"] + 1 + np.arange(n) % (len(SHAPES) - 1)) % len(SHAPES),
             "color": (a["color"] + 1 + np.arange(n) % (len(COLORS) - 1)) % len(COLORS)}
    inputs = render_scenes(other, image_size, offsets=a["offset"])
    return prompts, truth, inputs, torch.from_numpy(object_box_holes(a, image_size, 0.8))


def score_images(images: torch.Tensor, truth: dict[str, np.ndarray], evaluator=None) -> dict[str, float]:
    """Rates at which the evaluator reads each attribute as the prompt says, over the prompts that state it (an
    attribute a prompt leaves out is free; truth["stated"] from adherence_prompts says which, and without it
    every attribute counts), plus shape_color (both right), all3 (shape, colour and position right) and
    all_stated (every attribute the prompt states right). An attribute no prompt states is left out.
    Two-object truths (with shape2, from adherence_prompts(max_objects=2)) are scored by score_two_objects."""
    if "shape2" in truth:
        return score_two_objects(images, truth, evaluator)
    from imgen.metrics.evaluators import load_evaluator

    ev = evaluator or load_evaluator("shapes-eval")
    pred = {k: v.numpy() for k, v in ev.predict(images).items()}
    keys = [k for k in READ if k in truth]
    stated = np.asarray(truth.get("stated", np.ones((len(images), len(READ)), dtype=bool)))
    stated = {k: stated[:, READ.index(k)] for k in keys}
    hit = {k: pred[k] == np.asarray(truth[k]) for k in keys}
    out = {k: float(hit[k][stated[k]].mean()) for k in keys if stated[k].any()}
    out["shape_color"] = float((hit["shape"] & hit["color"]).mean())
    out["all3"] = float((hit["shape"] & hit["color"] & hit["pos"]).mean())
    out["all_stated"] = float(np.logical_and.reduce([hit[k] | ~stated[k] for k in keys]).mean())
    return out


def score_two_objects(images: torch.Tensor, truth: dict[str, np.ndarray], evaluator=None) -> dict[str, float]:
    """Two-object adherence: the `shapes-cells` evaluator reads the cell each object's prompt puts it in (object 1
    at pos, object 2 at pos2) and its shape, colour and size there are compared with the prompt's; pos / pos2 is
    right when that cell holds an object. Rates over the prompts that state each attribute (object 1: shape,
    color, size, pos; object 2: shape2, color2, size2, pos2; bg), plus n_objects (exactly two cells occupied),
    two_objects (both objects fully right: every stated attribute of each) and all_stated (two_objects and the
    background where stated). Every prompt must state both positions (all caption templates do)."""
    from imgen.metrics.evaluators import load_evaluator

    ev = evaluator or load_evaluator("shapes-cells")
    pred = {k: v.numpy() for k, v in ev.predict(images).items()}  # cell_*: (N, 9), bg: (N,)
    n = len(images)
    stated = np.asarray(truth.get("stated", np.ones((n, len(READ2)), dtype=bool)))
    stated = {k: stated[:, READ2.index(k)] for k in READ2}
    if not (stated["pos"].all() and stated["pos2"].all()):
        raise ImgenError("two-object adherence reads each object in the cell its prompt names: every prompt must "
                         "state pos and pos2")
    rows = np.arange(n)
    hit = {"bg": pred["bg"] == np.asarray(truth["bg"])}
    for s in ("", "2"):
        cell = np.asarray(truth["pos" + s])
        hit["pos" + s] = pred["cell_shape"][rows, cell] != EMPTY
        for k in ("shape", "color", "size"):
            hit[k + s] = pred["cell_" + k][rows, cell] == np.asarray(truth[k + s])
    out = {k: float(hit[k][stated[k]].mean()) for k in READ2 if stated[k].any()}
    out["n_objects"] = float(((pred["cell_shape"] != EMPTY).sum(1) == 2).mean())
    def object_right(s: str) -> np.ndarray:  # every stated attribute of object 1 (s="") or 2 (s="2")
        return np.logical_and.reduce([hit[k + s] | ~stated[k + s] for k in ("shape", "color", "size", "pos")])

    both = object_right("") & object_right("2")
    out["two_objects"] = float(both.mean())
    out["all_stated"] = float((both & (hit["bg"] | ~stated["bg"])).mean())
    return out


def adherence(model, n: int = 200, batch: int = 100, seed: int = 0, prompt_seed: int = HELDOUT_SEED,
              split: str = "heldout", templates: str = "heldout", max_objects: int = 1,
              **sample_kwargs) -> dict[str, float]:
    """Adherence rates of `model` (an imgen.Model that is text-conditional) on n held-out prompts, one image
    each (max_objects=2: n two-object prompts, scored by score_two_objects); `sample_kwargs` (sampler, steps,
    cfg, ...) go to model.generate."""
    if n < 1:
        raise ImgenError(f"adherence needs n >= 1 prompts, got {n}")
    prompts, truth = adherence_prompts(n, prompt_seed, split, templates, max_objects)
    images = torch.cat([model.generate(prompts[i:i + batch], seed=seed + i, **sample_kwargs)
                        for i in range(0, n, batch)])
    return score_images(images, truth)


ATTRIBUTE_COLUMNS = (("shape", "shape", "shape2"), ("colour", "color", "color2"), ("position", "pos", "pos2"),
                     ("size", "size", "size2"), ("background (stated)", "bg", None),
                     ("every stated attribute", "all_stated", None), ("both objects fully right", "two_objects", None))


def attribute_table(rates: dict, n: int) -> list[dict]:
    """The every-attribute table: rows for {1: adherence(.., max_objects=1), 2: adherence(.., max_objects=2)}
    (either may be absent), each cell a percentage; a two-object cell reads "object 1 / object 2"."""
    pct = lambda r, k: f"{r[k]:.1%}" if k in r else "—"  # noqa: E731
    rows = []
    for k, label in ((1, "one-object"), (2, "two-object (shapes-cells)")):
        if k not in rates:
            continue
        row = {"prompts": f"{n} {label}"}
        for col, key, key2 in ATTRIBUTE_COLUMNS:
            row[col] = pct(rates[k], key) + (f" / {pct(rates[k], key2)}" if k == 2 and key2 else "")
        rows.append(row)
    return rows


def markdown_table(rows: list[dict]) -> str:
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    return "\n".join(lines + ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]) + "\n"


# ---- a concept for LoRA: a style that prompts without a background word do not get ----
STYLE_BG = "brown"  # a style of prompts that name no background: the base draws any of the four (chance 25%)


def style_concept(n: int, bg: str = STYLE_BG, seed: int = 7, image_size: int = 32) -> tuple[torch.Tensor, list[str]]:
    """n training pictures of the style "every object on a `bg` background": one-object train-split scenes drawn
    on that background, with their usual captions. -> (images (n, 3, H, W), captions)."""
    if bg not in BACKGROUND_NAMES:
        raise ImgenError(f"style background must be one of {', '.join(BACKGROUND_NAMES)}, got {bg!r}")
    a = sample_scene_attributes(seed, np.arange(n), "train", max_objects=1)
    a["bg"] = np.full(n, BACKGROUND_NAMES.index(bg), np.int64)
    return render_scenes(a, image_size, offsets=a["offset"]), scene_captions(a)


def style_accuracy(images: torch.Tensor, truth: dict[str, np.ndarray], bg: str = STYLE_BG,
                   evaluator=None) -> dict[str, float]:
    """concept_accuracy: the fraction of images drawn in the style (shapes-eval reads the `bg` background);
    prompt_still_obeyed: shape, colour and position as the prompt says (truth from adherence_prompts)."""
    from imgen.metrics.evaluators import load_evaluator

    ev = evaluator or load_evaluator("shapes-eval")
    pred = {k: v.numpy() for k, v in ev.predict(images).items()}
    style = pred["bg"] == BACKGROUND_NAMES.index(bg)
    obeyed = np.logical_and.reduce([pred[k] == np.asarray(truth[k]) for k in ("shape", "color", "pos")])
    return {"concept_accuracy": float(style.mean()), "prompt_still_obeyed": float(obeyed.mean()),
            "both": float((style & obeyed).mean())}


# ---- a concept for textual inversion: a new word for an object the shipped model never saw ----
WORD_CONCEPT = {"word": "zorp", "shape": "triangle", "color": "magenta"}  # a HELDOUT_PAIRS pair


def word_concept(n: int, seed: int = 7, split: str = "train", word: str = WORD_CONCEPT["word"],
                 image_size: int = 32) -> tuple[torch.Tensor, list[str], dict[str, np.ndarray]]:
    """n scenes of the concept (a magenta triangle) at the stream's sizes and positions, captioned with the new
    word instead of its colour and shape ("a big zorp in the top left"). -> (images, captions, truth): truth has
    shape, color, pos, size (split="heldout", seed=HELDOUT_SEED: evaluation prompts)."""
    from imgen.data.shapes import POSITION_PHRASES, SIZE_WORDS, SIZES

    a = sample_scene_attributes(seed, np.arange(n), split, max_objects=1)
    a["shape"] = np.full(n, SHAPES.index(WORD_CONCEPT["shape"]), np.int64)
    a["color"] = np.full(n, list(COLORS).index(WORD_CONCEPT["color"]), np.int64)
    captions = [f"a {SIZE_WORDS[SIZES[s]][v % 3]} {word} {POSITION_PHRASES[p][(v // 3) % 3]}"
                for s, p, v in zip(a["size"], a["pos"], a["variant"])]
    truth = {k: a[k] for k in ("shape", "color", "pos", "size")}
    return render_scenes(a, image_size, offsets=a["offset"]), captions, truth


def word_accuracy(images: torch.Tensor, truth: dict[str, np.ndarray], evaluator=None) -> dict[str, float]:
    """concept_accuracy: shapes-eval reads the concept's shape and colour; prompt_still_obeyed: the position and
    size the prompt asks for."""
    from imgen.metrics.evaluators import load_evaluator

    ev = evaluator or load_evaluator("shapes-eval")
    pred = {k: v.numpy() for k, v in ev.predict(images).items()}
    hit = {k: pred[k] == np.asarray(truth[k]) for k in truth}
    return {"concept_accuracy": float((hit["shape"] & hit["color"]).mean()),
            "prompt_still_obeyed": float((hit["pos"] & hit["size"]).mean())}
