"""Two-object prompt adherence read cell by cell with the shipped `shapes-cells` evaluator: real renders of
held-out two-object scenes score (nearly) perfectly, a colour swapped between the two objects is caught (attribute
binding), and a background the prompt leaves out is free."""
import json

import numpy as np
import pytest
import torch

from imgen.data import load_dataset
from imgen.data.shapes import EMPTY, cell_attributes, render_scenes
from imgen.metrics.adherence import READ2, adherence_prompts, adherence_scenes, score_images
from imgen.metrics.evaluators import EVALUATOR_DIR, load_evaluator

N = 120


@pytest.fixture(scope="module")
def two_object_scenes():
    prompts, truth = adherence_prompts(N, max_objects=2)
    a = adherence_scenes(N, max_objects=2)
    return prompts, truth, render_scenes(a, 32, a["offset"])


def test_cell_targets_name_each_objects_cell():
    a = {"shape": np.array([2, 4]), "color": np.array([1, 7]), "size": np.array([0, 1]), "pos": np.array([0, 8]),
         "n_objects": np.array([1, 2]), "shape2": np.array([-1, 0]), "color2": np.array([-1, 3]),
         "size2": np.array([-1, 0]), "pos2": np.array([-1, 4])}
    c = cell_attributes(a)
    assert c["cell_shape"].tolist() == [[2] + [EMPTY] * 8, [EMPTY] * 4 + [0] + [EMPTY] * 3 + [4]]
    assert c["cell_color"][1, 4] == 3 and c["cell_color"][1, 8] == 7 and (c["cell_color"][0, 1:] == -1).all()
    batch = load_dataset("shapes", n=8, cells=True).get(np.arange(8))
    assert batch["attrs"]["cell_size"].shape == (8, 9)


def test_shapes_cells_card_reports_heldout_accuracy_of_at_least_99_percent():
    meta = json.loads((EVALUATOR_DIR / "shapes-cells" / "config.json").read_text())
    assert set(meta["heldout_accuracy"]) == {"cell_shape", "cell_color", "cell_size", "bg"}
    assert min(meta["heldout_accuracy"].values()) >= 0.99, meta["heldout_accuracy"]
    ev = load_evaluator("shapes-cells")
    pred = ev.predict(torch.zeros(2, 3, 32, 32))
    assert pred["cell_shape"].shape == (2, 9) and pred["bg"].shape == (2,)


def test_two_object_prompts_of_real_renders_score_every_stated_attribute(two_object_scenes):
    prompts, truth, real = two_object_scenes
    assert len(prompts) == N and truth["stated"].shape == (N, len(READ2))
    assert all(" and " in p or "; " in p or " / " in p for p in prompts)  # every prompt names two objects
    scores = score_images(real, truth)
    for k in READ2 + ("two_objects", "n_objects", "all_stated"):
        assert scores[k] >= 0.98, (k, scores)


def test_colours_swapped_between_the_two_objects_are_caught(two_object_scenes):
    _, truth, real = two_object_scenes
    swapped = dict(truth, color=truth["color2"], color2=truth["color"])
    same = (truth["color"] == truth["color2"]).mean()  # a swap of equal colours changes nothing
    scores = score_images(real, swapped)
    assert scores["two_objects"] <= same + 0.02 and scores["shape"] >= 0.98
    moved = dict(truth, pos=truth["pos2"], pos2=truth["pos"])  # right objects, each in the other's cell
    assert score_images(real, moved)["two_objects"] <= 0.1


def test_a_background_the_prompt_does_not_state_is_free(two_object_scenes):
    prompts, truth, real = two_object_scenes
    bg_stated = truth["stated"][:, READ2.index("bg")]
    assert bg_stated.any() and not bg_stated.all()
    assert all(("background" in p) == s for p, s in zip(prompts, bg_stated))
    wrong = dict(truth, bg=(truth["bg"] + 1) % 4)
    free = dict(truth, bg=np.where(bg_stated, truth["bg"], wrong["bg"]))  # wrong only where not stated
    assert score_images(real, free)["bg"] >= 0.98 and score_images(real, free)["all_stated"] >= 0.98
    scores = score_images(real, wrong)
    assert scores["bg"] <= 0.02 and scores["two_objects"] >= 0.98  # the objects are still right
    assert scores["all_stated"] == pytest.approx(1 - bg_stated.mean(), abs=0.02)
