"""Multi-view aggregation against hand-computed scores, metrics, and the
2-process merge where one video's views are split across batches and ranks."""

import json
import os

import pytest
import torch

from cgnl_video.engine.multiview import ViewAggregator, gather_aggregators, prediction_records, video_metrics
from cgnl_video.utils import distributed as du
from engine_helpers import run_distributed

CLASSES = ["a", "b", "c"]
LABELS = [0, 1, 2, 1]  # four listed videos


def _views():
    """Per video, its views' probabilities (hand-made)."""
    return {
        0: torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.7, 0.2, 0.1]]),  # mean .5 .333 .167 -> a
        1: torch.tensor([[0.1, 0.2, 0.7], [0.1, 0.8, 0.1]]),  # mean .1 .5 .4 -> b
        2: torch.tensor([[0.4, 0.5, 0.1], [0.4, 0.1, 0.5]]),  # mean .4 .3 .3 -> a (wrong, c is 2nd/3rd)
    }  # video 3 could not be read


def _expected_scores():
    return {0: [0.5, 1 / 3, 1 / 6], 1: [0.1, 0.5, 0.4], 2: [0.4, 0.3, 0.3]}


def _check_scores(scores):
    assert sorted(scores) == [0, 1, 2]
    for index, expected in _expected_scores().items():
        assert scores[index].tolist() == pytest.approx(expected)


def test_views_split_across_batches_average_to_the_hand_computed_score():
    views = _views()
    batch1, batch2 = ViewAggregator(), ViewAggregator()
    batch1.add(0, views[0][:2])  # video 0: two views in one batch ...
    batch2.add(0, views[0][2:])  # ... the third in the next
    batch1.add(1, views[1])
    batch2.add(2, views[2])
    batch2.add(3, torch.zeros(0, 3))  # unreadable
    batch1.merge(batch2)
    _check_scores(batch1.scores())
    assert batch1.counts == {0: 3, 1: 2, 2: 2}
    assert batch1.failed() == [3]


def test_metrics_top1_topk_per_class_and_scored_of_listed():
    agg = ViewAggregator()
    for index, probs in _views().items():
        agg.add(index, probs)
    metrics = video_metrics(agg.scores(), LABELS, CLASSES, agg.failed())
    assert metrics["top1_acc"] == pytest.approx(200 / 3)  # videos 0 and 1 right
    assert metrics["top5_acc"] == pytest.approx(100.0)  # k = min(5, 3 classes)
    assert (metrics["videos_scored"], metrics["videos_listed"], metrics["videos_failed"]) == (3, 4, [])
    assert metrics["per_class"]["a"] == {"correct": 1, "videos": 1, "top1": 100.0}
    assert metrics["per_class"]["c"] == {"correct": 0, "videos": 1, "top1": 0.0}
    assert metrics["mean_class_acc"] == pytest.approx(200 / 3)
    json.dumps(metrics)  # serialisable as test_metrics.json


def test_top5_over_many_classes():
    scores = {0: torch.arange(10.0).flip(0), 1: torch.arange(10.0)}  # video 1: label 2 ranks 8th
    metrics = video_metrics(scores, [4, 2], [str(i) for i in range(10)])
    assert metrics["top1_acc"] == 0.0 and metrics["top5_acc"] == 50.0


def test_prediction_records_list_top_labels_and_scores():
    agg = ViewAggregator()
    agg.add(1, _views()[1])
    (record,) = prediction_records(agg.scores(), ["v0", "v1", "v2", "v3"], LABELS, CLASSES)
    assert record["path"] == "v1" and record["label"] == "b"
    assert record["top5_labels"] == ["b", "c", "a"]
    assert record["top5_scores"] == pytest.approx([0.5, 0.4, 0.1])


def _rank_worker(rank, out_dir):
    du.init_distributed("gloo")
    views = _views()
    local = ViewAggregator()
    if rank == 0:
        local.add(0, views[0][:1])
        local.add(1, views[1])
        local.add(3, torch.zeros(0, 3))
    else:
        local.add(0, views[0][1:])  # video 0's other views are on rank 1
        local.add(2, views[2])
    merged = gather_aggregators(local)
    result = {
        "scores": {i: s.tolist() for i, s in merged.scores().items()},
        "counts": merged.counts,
        "failed": merged.failed(),
    }
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as handle:
        json.dump(result, handle)
    du.cleanup_distributed()


def test_two_gloo_processes_count_every_video_once(tmp_path):
    run_distributed(_rank_worker, 2, str(tmp_path))
    for rank in range(2):
        with open(tmp_path / f"rank{rank}.json") as handle:
            result = json.load(handle)
        _check_scores({int(i): torch.tensor(s) for i, s in result["scores"].items()})
        assert result["counts"] == {"0": 3, "1": 2, "2": 2}
        assert result["failed"] == [3]


class _Probe(torch.nn.Module):
    """Eval-mode stand-in: the probabilities are a view's first three pixel values."""

    def forward(self, clips):
        return clips[:, 0, 0, 0, :3]


class _FakeLoader(list):
    class dataset:  # noqa: N801 - mimics loader.dataset
        entries = [type("E", (), {"path": f"v{i}", "label": label})() for i, label in enumerate(LABELS)]
        classes = CLASSES


def _as_views(probs):
    views = torch.zeros(len(probs), 3, 1, 1, 3)
    views[:, 0, 0, 0, :] = probs
    return views


def test_run_test_splits_batches_into_chunks_across_videos():
    from cgnl_video.config import load_config
    from cgnl_video.engine.multiview import run_test

    views = _views()
    loader = _FakeLoader([
        ([_as_views(views[0]), _as_views(views[1])], torch.tensor([0, 1]), torch.tensor([0, 1])),
        ([torch.zeros(0, 3, 1, 1, 3), _as_views(views[2])], torch.tensor([1, 2]), torch.tensor([3, 2])),
    ])
    cfg = load_config(None, ["TEST.VIEWS_PER_FORWARD", "2", "TEST.NUM_ENSEMBLE_VIEWS", "1",
                             "TEST.NUM_SPATIAL_CROPS", "3"])  # chunks of 2 views straddle videos
    metrics, merged = run_test(_Probe(), loader, cfg, torch.device("cpu"))
    _check_scores(merged.scores())
    assert merged.counts == {0: 3, 1: 2, 2: 2}
    assert metrics["videos_failed"] == [3] and metrics["videos_scored"] == 3
    assert metrics["top1_acc"] == pytest.approx(200 / 3)


def test_run_test_scores_full_frame_views_of_different_sizes_in_one_batch():
    """TEST.FULL_FRAME keeps each video's aspect ratio, so one batch can hold views of several sizes."""
    from cgnl_video.config import load_config
    from cgnl_video.engine.multiview import run_test

    views = _views()
    wide = torch.zeros(3, 3, 1, 1, 5)  # video 0: wider frames than the others
    wide[:, 0, 0, 0, :3] = views[0]
    loader = _FakeLoader([
        ([wide, _as_views(views[1]), _as_views(views[2])], torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2])),
    ])
    cfg = load_config(None, ["TEST.VIEWS_PER_FORWARD", "2", "TEST.NUM_ENSEMBLE_VIEWS", "3",
                             "TEST.NUM_SPATIAL_CROPS", "1", "TEST.FULL_FRAME", "True"])
    metrics, merged = run_test(_Probe(), loader, cfg, torch.device("cpu"))
    _check_scores(merged.scores())
    assert merged.counts == {0: 3, 1: 2, 2: 2}
    assert metrics["videos_scored"] == 3


class _TinyNet(torch.nn.Module):
    """Eval-mode stand-in with real arithmetic: conv, pooling, softmax."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv3d(3, 4, 3, padding=1)

    def forward(self, clips):
        return self.conv(clips).mean(dim=(2, 3, 4)).softmax(1)


@pytest.mark.parametrize("channels_last", [False, True])
def test_to_device_normalises_uint8_views_and_keeps_float_clips(channels_last):
    from cgnl_video.config import load_config
    from cgnl_video.data.transforms import normalize_uint8
    from cgnl_video.engine.inputs import to_device

    cfg = load_config(None, ["MODEL.CHANNELS_LAST", str(channels_last)])
    pixels = torch.randint(0, 256, (2, 3, 2, 4, 5), dtype=torch.uint8)
    clips = to_device(pixels, torch.device("cpu"), cfg)
    assert clips.dtype == torch.float32
    assert clips.is_contiguous(memory_format=torch.channels_last_3d if channels_last else torch.contiguous_format)
    mean, std = torch.tensor(cfg.DATA.MEAN).view(3, 1, 1, 1), torch.tensor(cfg.DATA.STD).view(3, 1, 1, 1)
    assert torch.allclose(clips, (pixels / 255.0 - mean) / std, atol=1e-5)
    assert torch.equal(clips, normalize_uint8(pixels, cfg.DATA.MEAN, cfg.DATA.STD))
    floats = torch.randn(2, 3, 2, 4, 5)  # train / val clips: already normalised, unchanged
    assert torch.equal(to_device(floats, torch.device("cpu"), cfg), floats)


@pytest.mark.parametrize("full_frame", [False, True])
def test_run_test_on_uint8_views_equals_normalising_first(full_frame):
    """The loader's uint8 views, normalised by the engine per chunk, score exactly as the
    same views normalised beforehand (the float path), also for full-frame views of
    several sizes and a video with no views."""
    from cgnl_video.config import load_config
    from cgnl_video.data.transforms import normalize_uint8
    from cgnl_video.engine.multiview import run_test

    cfg = load_config(None, ["TEST.VIEWS_PER_FORWARD", "2", "TEST.NUM_ENSEMBLE_VIEWS", "3",
                             "TEST.NUM_SPATIAL_CROPS", "1", "TEST.FULL_FRAME", str(full_frame),
                             "DATA.MEAN", "[0.5, 0.25, 0.125]", "DATA.STD", "[0.5, 2.0, 0.25]"])
    generator = torch.Generator().manual_seed(0)
    widths = [6, 8 if full_frame else 6, 6]
    pixels = [torch.randint(0, 256, (3, 3, 2, 6, w), dtype=torch.uint8, generator=generator) for w in widths]
    empty = torch.zeros(0, 3, 2, 6, 6, dtype=torch.uint8)

    def loader(batches):
        return _FakeLoader([(list(views), torch.tensor([0] * len(views)), torch.tensor(indices))
                            for views, indices in batches])

    layout = [((pixels[0], pixels[1]), [0, 1]), ((empty, pixels[2]), [3, 2])]
    normalised = [([normalize_uint8(v, cfg.DATA.MEAN, cfg.DATA.STD) for v in views], indices)
                  for views, indices in layout]
    model = _TinyNet().eval()
    metrics, merged = run_test(model, loader(layout), cfg, torch.device("cpu"))
    expected_metrics, expected = run_test(model, loader(normalised), cfg, torch.device("cpu"))
    assert merged.counts == expected.counts == {0: 3, 1: 3, 2: 3} and merged.failed() == [3]
    scores, reference = merged.scores(), expected.scores()
    assert all(torch.equal(scores[i], reference[i]) for i in reference)
    assert metrics["videos_scored"] == expected_metrics["videos_scored"] == 3
