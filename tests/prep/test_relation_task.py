"""The relation task of benchmarks/bench_claim.py: deterministic, balanced, and its label
readable from no object and no average (only from the A-B relation)."""

import numpy as np
import pytest
import torch

from cgnl_video.prep.relation_task import PALETTE, TEXTURES, RelationSpec, make_batch, texture

SPEC = RelationSpec()


@pytest.fixture(scope="module")
def many():
    """1,600 training clips of the default spec (about 3 s)."""
    return make_batch(SPEC, 0, "train", range(1600))


def fit_and_score(features: np.ndarray, targets: np.ndarray, split: int) -> float:
    """Least-squares linear classifier (with bias) trained on the first ``split`` rows;
    accuracy on the others."""
    x = np.concatenate([features, np.ones((len(features), 1))], axis=1)
    w, *_ = np.linalg.lstsq(x[:split], 2.0 * targets[:split] - 1.0, rcond=None)
    return float(((x[split:] @ w > 0) == targets[split:]).mean())


def test_deterministic_per_seed_split_and_index():
    a = make_batch(SPEC, 3, "train", [5, 6])
    b = make_batch(SPEC, 3, "train", [6])
    assert torch.equal(a.clips[1], b.clips[0]) and a.labels[1] == b.labels[0] and a.a_cells[1] == b.a_cells[0]
    assert not torch.equal(a.clips[0], make_batch(SPEC, 4, "train", [5]).clips[0])
    assert not torch.equal(a.clips[0], make_batch(SPEC, 3, "test", [5]).clips[0])
    assert a.clips.shape == (2, 3, SPEC.num_frames, SPEC.size, SPEC.size) and a.clips.dtype == torch.float32


def test_textures_are_zero_mean_and_distinct():
    patterns = [texture(k, 12) for k in range(len(TEXTURES))]
    assert all(p.mean() == 0 and set(np.unique(p)) == {-1.0, 1.0} for p in patterns)
    assert all(not np.array_equal(p, q) for i, p in enumerate(patterns) for q in patterns[i + 1:])


def test_label_is_the_relation_and_balanced(many):
    labels = many.labels.numpy()
    assert 0.45 < labels.mean() < 0.55
    assert all(int(y) == int(t == c) for y, t, c in zip(labels, many.a_texture, many.b_colour))


def test_no_single_object_tells_the_label(many):
    """P(label = 1 | attribute) stays near 1/2 for A's texture, B's colour and the distractors' kinds."""
    labels = many.labels.numpy()
    columns = {"A texture": many.a_texture, "B colour": many.b_colour,
               "distractor texture": [d[0][0] for d in many.distractor_kinds],
               "distractor colour": [d[0][1] for d in many.distractor_kinds]}
    for name, values in columns.items():
        values = np.array(values)
        for kind in range(SPEC.kinds):
            rate = labels[values == kind].mean()
            assert 0.43 < rate < 0.57, (name, kind, rate)


def test_averages_tell_the_attributes_but_not_the_label(many):
    """A linear classifier on the per-frame RGB means (which include the clip mean) is at
    chance on the label, while the same features do read B's colour: they are informative."""
    means = many.clips.mean(dim=(3, 4)).flatten(1).numpy()  # (N, 3 * T)
    labels = many.labels.numpy()
    assert 0.44 < fit_and_score(means, labels, 1200) < 0.56
    assert fit_and_score(means, np.array(many.b_colour) == 0, 1200) > 0.75
    clip_means = many.clips.mean(dim=(2, 3, 4)).numpy()
    assert 0.44 < fit_and_score(clip_means, labels, 1200) < 0.56


def _objects(clip: torch.Tensor, spec: RelationSpec):
    """Cells of ``clip`` whose pixels differ from the background noise (objects)."""
    step = spec.size // spec.grid
    energy = clip.abs().mean(0).unflatten(1, (spec.grid, step)).unflatten(3, (spec.grid, step)).mean((2, 4))
    return {tuple(c) for c in torch.nonzero(energy > 2 * spec.noise).tolist()}


def test_objects_where_the_layout_says():
    batch = make_batch(SPEC, 1, "test", range(20))
    for i in range(20):
        assert _objects(batch.clips[i], SPEC) >= {batch.a_cells[i], batch.b_cells[i]}
        assert len(_objects(batch.clips[i], SPEC)) == 2 + SPEC.distractors
        t, y, x = batch.b_cells[i]
        step = SPEC.size // SPEC.grid
        patch = batch.clips[i][:, t, y * step:(y + 1) * step, x * step:(x + 1) * step].flatten(1)
        assert torch.allclose(patch.median(1).values, torch.from_numpy(PALETTE[batch.b_colour[i]]), atol=0.1)


@pytest.mark.parametrize("gap,distance,distractors", [(1, 0.0, 0), (3, 3.0, 6)])
def test_difficulty_parameters(gap, distance, distractors):
    spec = RelationSpec(num_frames=4, frame_gap=gap, min_distance=distance, distractors=distractors)
    batch = make_batch(spec, 0, "train", range(40))
    for a, b, d, clip in zip(batch.a_cells, batch.b_cells, batch.distractor_kinds, batch.clips):
        assert abs(a[0] - b[0]) == gap and np.hypot(a[1] - b[1], a[2] - b[2]) >= distance
        assert len(d) == distractors and len(_objects(clip, spec)) == 2 + distractors


@pytest.mark.parametrize("field,value", [("kinds", 5), ("frame_gap", 4), ("frame_gap", 0), ("size", 30),
                                         ("min_distance", 4.3), ("distractors", 63)])
def test_impossible_specs_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"RelationSpec.{field}"):
        make_batch(RelationSpec(**{field: value}), 0, "train", [0])
