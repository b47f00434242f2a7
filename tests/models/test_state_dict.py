"""The one checkpoint reader (cgnl_video.models.state_dict) and its users: every layout
(ours, PyTorchVideo's, "state_dict", bare, DataParallel / torch.compile prefixes) reads
the same weights through the engine, the hub and models/weights.py; strict loading
names the keys that do not fit; a new classifier is the only tolerated difference."""

import pytest
import torch
from torch import nn

from cgnl_video.config import get_cfg
from cgnl_video.engine import checkpoint as cu
from cgnl_video.models import build_model, load_pytorchvideo_state_dict
from cgnl_video.models.state_dict import CheckpointError, load_state, model_state, read_state_dict

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # torch on one thread in every test

NARROW = ["RESNET.WIDTH_PER_GROUP", "4", "MODEL.NUM_CLASSES", "5"]
CLASSIFIER = ["blocks.6.proj.weight", "blocks.6.proj.bias"]


def _cfg(*opts):
    cfg = get_cfg()
    cfg.merge_from_list([*NARROW, *opts])
    return cfg


def _trained_like(seed: int = 0, *opts) -> nn.Module:
    """A narrow C2D R-50 whose every tensor (norm weights and running statistics included)
    is away from its init, as after training."""
    torch.manual_seed(seed)
    model = build_model(_cfg(*opts))
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                tensor.add_(torch.rand_like(tensor) * 0.1 + (0.5 if "running_var" in name else 0.0))
    return model


def _layouts(state):
    """Name -> what a file of that layout holds."""
    return {
        "ours": {"model": state, "optimizer": {"state": {}, "param_groups": []}, "epoch": 3, "cfg": "x: 1\n"},
        "pytorchvideo": {"model_state": state, "optimizer_state": {}, "epoch": 3, "cfg": "x: 1\n"},
        "state_dict": {"state_dict": state, "epoch": 3},
        "bare": dict(state),
        "dataparallel": {"model": {f"module.{k}": v for k, v in state.items()}, "epoch": 3},
        "compiled": {f"_orig_mod.{k}": v for k, v in state.items()},
    }


@pytest.fixture(scope="module")
def source():
    return _trained_like(0)


@pytest.mark.parametrize("layout", ["ours", "pytorchvideo", "state_dict", "bare", "dataparallel", "compiled"])
def test_every_layout_reads_the_same_weights_in_the_engine_hub_and_weights(source, layout, tmp_path):
    expected = source.state_dict()
    path = str(tmp_path / f"{layout}.pyth")
    torch.save(_layouts(expected)[layout], path)
    read = read_state_dict(path)
    assert sorted(read) == sorted(expected) and all(torch.equal(read[k], expected[k]) for k in expected)

    engine_model = build_model(_cfg())  # the engine: resume, test-only, fine-tune
    checkpoint, report = cu.load_model_weights(engine_model, path)
    assert report.skipped == [] and len(report.loaded) == len(expected)
    assert all(torch.equal(engine_model.state_dict()[k], expected[k]) for k in expected)
    assert checkpoint.get("epoch") == (None if layout in ("bare", "compiled") else 3)

    ptv_model = build_model(_cfg())  # models/weights.py
    load_pytorchvideo_state_dict(ptv_model, path)
    assert all(torch.equal(ptv_model.state_dict()[k], expected[k]) for k in expected)


def test_the_hub_reads_every_layout(source, tmp_path):
    from cgnl_video.hub import hub_model

    config = tmp_path / "narrow.yaml"
    config.write_text("RESNET: {WIDTH_PER_GROUP: 4}\nMODEL: {NUM_CLASSES: 200}\n")
    clip = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        expected = source.eval()(clip)
        for layout in ("pytorchvideo", "state_dict", "dataparallel"):  # ours and bare: tools/test_hubconf.py
            content = _layouts(source.state_dict())[layout]
            path = str(tmp_path / f"{layout}.pyth")
            torch.save(content, path)
            model = hub_model(str(config), checkpoint=path)  # 5 classes, from the checkpoint
            assert torch.equal(model(clip), expected), layout


def test_a_file_without_a_state_dict_is_named(tmp_path):
    path = str(tmp_path / "optimizer_only.pyth")
    torch.save({"optimizer": {"lr": 0.1}, "epoch": 2}, path)
    with pytest.raises(CheckpointError, match=r"optimizer_only\.pyth holds no model state dict .*'optimizer'"):
        read_state_dict(path)
    with pytest.raises(FileNotFoundError, match="checkpoint not found: .*absent.pyth"):
        read_state_dict(str(tmp_path / "absent.pyth"))
    for content in ({"model": {}}, {"model": {"w": "not a tensor"}}, ["a", "list"]):
        with pytest.raises(CheckpointError, match="^checkpoint holds no model state dict"):
            model_state(content)


def test_strict_load_names_missing_unexpected_and_reshaped_keys_and_changes_nothing(source):
    state = dict(source.state_dict())
    del state["blocks.1.res_blocks.0.branch2.conv_a.weight"]
    state["blocks.9.extra.weight"] = torch.zeros(2)
    state["blocks.0.conv.weight"] = torch.zeros(3, 3, 1, 7, 7)
    model = build_model(_cfg())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as error:
        load_state(model, state, source="ckpt.pyth")
    message = str(error.value)
    assert message.startswith("ckpt.pyth does not fit the model: ")
    assert "1 missing from the file: blocks.1.res_blocks.0.branch2.conv_a.weight" in message
    assert "1 not in the model: blocks.9.extra.weight" in message
    assert "1 of another shape: blocks.0.conv.weight (3, 3, 1, 7, 7) in the file, (4, 3, 1, 7, 7) in the model" \
        in message
    assert all(torch.equal(model.state_dict()[k], before[k]) for k in before)


def test_a_new_classifier_keeps_its_init_and_nothing_else_may_differ(source):
    torch.manual_seed(7)
    model = build_model(_cfg("MODEL.NUM_CLASSES", "3"))
    fresh = {k: v.clone() for k, v in model.state_dict().items() if k in CLASSIFIER}
    with pytest.raises(CheckpointError, match="blocks.6.proj.weight"):
        load_state(model, source.state_dict())  # strict: another number of classes is a mismatch
    report = load_state(model, source.state_dict(), new_classifier=True)
    assert report.skipped == CLASSIFIER
    state = model.state_dict()
    assert all(torch.equal(state[k], fresh[k]) for k in CLASSIFIER)
    assert all(torch.equal(state[k], v) for k, v in source.state_dict().items() if k not in CLASSIFIER)

    wider = _trained_like(1, "RESNET.WIDTH_PER_GROUP", "8").state_dict()
    with pytest.raises(CheckpointError, match=r"of another shape: blocks\.0\.conv\.weight"):
        load_state(build_model(_cfg("MODEL.NUM_CLASSES", "3")), wider, new_classifier=True)
    same_classes = dict(source.state_dict())
    same_classes["blocks.6.proj.bias"] = torch.zeros(9)  # a bias that disagrees with its own weight
    with pytest.raises(CheckpointError, match=r"blocks\.6\.proj\.bias \(9,\) in the file"):
        load_state(build_model(_cfg()), same_classes, new_classifier=True)
