"""RESNET.IMAGENET_WEIGHTS by name: torchvision's weights API and torch.hub's cache,
offline errors that say where to put the file, build_model reading no file, and the
engine reading the weights once, at the start of a fresh run only.

No test touches the network: TORCH_HOME points at a temporary folder, a stand-in state
dict sits where torchvision's cache expects the file, and torch.hub's download function
is replaced (by one that fails, or one that writes the stand-in and records the call).
"""

import os

import pytest
import torch
import torchvision

from cgnl_video.config import ConfigError, load_config, validate
from cgnl_video.config.backbones import TORCHVISION_WEIGHTS
from cgnl_video.engine import checkpoint as cu
from cgnl_video.engine.launch import run
from cgnl_video.engine.preflight import check_files
from cgnl_video.models import build_model, load_pretrained
from cgnl_video.models.weights import WeightsUnavailableError, torchvision_key_to_c2d
from engine_helpers import make_tiny_dataset, tiny_opts
from tools_fixtures import ROOT, run_tool
from weights_fixtures import RESNET50_V1_URL, cache_file

NARROW = ["RESNET.WIDTH_PER_GROUP", "4"]  # the width of engine_helpers.tiny_opts


pytestmark = pytest.mark.usefixtures("single_thread")  # torch on one thread in every test


@pytest.fixture(scope="module")
def stand_in():
    """A torchvision-layout ResNet-50 state dict (1000-class fc) at the narrow width of the
    tests, with trained-like values: made from a narrow C2D model, 1 x k x k kernels -> k x k."""
    cfg = load_config(None, [*NARROW, "MODEL.NUM_CLASSES", "1000"])
    torch.manual_seed(5)
    c2d = build_model(cfg).state_dict()
    with torch.device("meta"):
        keys = list(torchvision.models.resnet50().state_dict())
    state = {}
    for key in keys:
        value = c2d[torchvision_key_to_c2d(key)].clone()
        if value.is_floating_point():
            value += torch.rand_like(value) * 0.1 + (0.5 if "running_var" in key else 0.0)
        state[key] = value[:, :, 0] if value.dim() == 5 else value
    return state


def place(state, home) -> str:
    path = cache_file(home)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(state, path)
    return path


def assert_backbone_is(model, state) -> None:
    """Every tensor of the stand-in (its fc aside) sits, inflated, in the C2D model."""
    ours = model.state_dict()
    for key, value in state.items():
        if not key.startswith("fc."):
            mine = ours[torchvision_key_to_c2d(key)]
            assert torch.equal(mine, value.unsqueeze(2) if mine.dim() == 5 else value), key


# ----------------------------------------------------------------------------- the name rule
@pytest.mark.parametrize("value", ["", "IMAGENET1K_V1", "IMAGENET1K_V2", "pretrained/resnet50.pth",
                                   "resnet50.pth", "/abs/weights", "C:\\weights\\r50"])
def test_names_and_paths_pass_validation(value):
    validate(load_config(None, ["RESNET.IMAGENET_WEIGHTS", value], check=False))


@pytest.mark.parametrize("value", ["IMAGENET1K_V3", "DEFAULT", "imagenet1k_v1", "resnet50"])
def test_an_unknown_name_is_rejected_naming_the_key_and_the_names(value):
    cfg = load_config(None, ["RESNET.IMAGENET_WEIGHTS", value, "RESNET.DEPTH", "101"], check=False)
    with pytest.raises(ConfigError, match=rf"^RESNET\.IMAGENET_WEIGHTS: '{value}' is neither a torchvision "
                                          r"ResNet-101 weights name \(IMAGENET1K_V1, IMAGENET1K_V2\) nor a file path"):
        validate(cfg)


@pytest.mark.parametrize("depth", [50, 101])
def test_the_known_names_are_torchvisions(depth):
    members = set(torchvision.models.get_model_weights(f"resnet{depth}").__members__)
    assert members - {"DEFAULT"} == set(TORCHVISION_WEIGHTS)


# ----------------------------------------------------------------------------- loading by name
def test_a_name_loads_from_torchvisions_cache_without_a_download(torch_home, stand_in):
    place(stand_in, torch_home)
    cfg = load_config(None, [*NARROW, "MODEL.NUM_CLASSES", "3", "RESNET.IMAGENET_WEIGHTS", "IMAGENET1K_V1"])
    model = build_model(cfg)
    report = load_pretrained(cfg, model)
    assert_backbone_is(model, stand_in)
    assert report.skipped == ["fc.weight", "fc.bias"] and report.source == "RESNET.IMAGENET_WEIGHTS IMAGENET1K_V1"


def test_the_first_use_downloads_into_the_cache_with_a_progress_bar(torch_home, stand_in, monkeypatch):
    calls = []

    def download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, dst, progress))
        torch.save(stand_in, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    cfg = load_config(None, [*NARROW, "MODEL.NUM_CLASSES", "3", "RESNET.IMAGENET_WEIGHTS", "IMAGENET1K_V1"])
    for _ in range(2):  # the second use reads the cache
        model = build_model(cfg)
        load_pretrained(cfg, model)
        assert_backbone_is(model, stand_in)
    assert calls == [(RESNET50_V1_URL, cache_file(torch_home), True)]


def test_offline_the_error_names_the_url_the_file_and_the_cache_path(torch_home):
    cfg = load_config(None, [*NARROW, "RESNET.IMAGENET_WEIGHTS", "IMAGENET1K_V1"])
    with pytest.raises(WeightsUnavailableError) as error:
        load_pretrained(cfg, build_model(cfg))
    message = str(error.value)
    assert message.startswith("RESNET.IMAGENET_WEIGHTS IMAGENET1K_V1: the torchvision ResNet-50 weights are not in")
    assert f"download\n  {RESNET50_V1_URL}\nand copy that file, keeping its name resnet50-0676ba61.pth, to\n  " \
           f"{cache_file(torch_home)}\n" in message
    assert "Temporary failure in name resolution" in message


def test_offline_run_net_exits_2_with_the_cache_path_not_a_traceback(torch_home, tmp_path, capsys):
    root = str(tmp_path / "data")
    make_tiny_dataset(root, per_class=2)
    opts = tiny_opts(root, str(tmp_path / "run"), RESNET__IMAGENET_WEIGHTS="IMAGENET1K_V1")
    assert run_tool("run_net", ["--cfg", "", *opts]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: RESNET.IMAGENET_WEIGHTS IMAGENET1K_V1:") and cache_file(torch_home) in err
    assert "Traceback" not in err


def test_build_model_reads_no_file_the_readme_example_works_on_a_fresh_machine(torch_home, tmp_path,
                                                                                monkeypatch):
    """README "Models": ``build_model(load_config("configs/minikinetics/R101_CGNL8.yaml"))``
    with nothing cached, no network and no pretrained/ folder."""
    monkeypatch.chdir(tmp_path)
    cfg = load_config(os.path.join(ROOT, "configs", "minikinetics", "R101_CGNL8.yaml"))
    assert cfg.RESNET.IMAGENET_WEIGHTS == "IMAGENET1K_V1"  # the paper configs name the weights
    model = build_model(cfg)
    assert len(model.blocks[4].res_blocks) == 23 and model.head.proj.out_features == 200
    assert not os.path.exists(cache_file(torch_home))


def test_torch_hub_reads_imagenet_weights_only_when_opts_name_them(torch_home, stand_in):
    from cgnl_video.hub import hub_model

    config = os.path.join(ROOT, "configs", "minikinetics", "R50.yaml")  # names IMAGENET1K_V1
    hub_model(config, num_classes=3, opts=NARROW)  # offline, empty cache: nothing is read
    place(stand_in, torch_home)
    assert_backbone_is(hub_model(config, num_classes=3, opts=[*NARROW, "RESNET.IMAGENET_WEIGHTS", "IMAGENET1K_V1"]),
                       stand_in)


# ----------------------------------------------------------------------------- when the engine reads them
def _initialised_lines(out) -> int:
    with open(os.path.join(out, "log.txt"), encoding="utf-8") as handle:
        return sum("initialised the backbone from RESNET.IMAGENET_WEIGHTS IMAGENET1K_V1" in line for line in handle)


def test_a_fresh_run_reads_the_weights_once_a_resumed_or_test_only_run_never(torch_home, stand_in, tmp_path):
    root, out = str(tmp_path / "data"), str(tmp_path / "run")
    make_tiny_dataset(root, per_class=2)
    cached = place(stand_in, torch_home)
    lr_zero = dict(RESNET__IMAGENET_WEIGHTS="IMAGENET1K_V1", SOLVER__MAX_EPOCH=1, SOLVER__STEPS="[0]",
                   SOLVER__LRS="[0.0]", SOLVER__WARMUP_EPOCHS=0.0, TRAIN__EVAL_PERIOD=0, TEST__ENABLE=False)
    run(load_config(None, tiny_opts(root, out, **lr_zero)))
    assert _initialised_lines(out) == 1
    trained = build_model(load_config(None, tiny_opts(root, out, **lr_zero)))
    trained.load_state_dict(cu.load_checkpoint(cu.list_checkpoints(out)[-1])["model"])
    for name, parameter in trained.named_parameters():  # LR 0: the parameters are still the start's
        if ".inserted." not in name and not name.startswith("blocks.6."):
            key = next(k for k in stand_in if torchvision_key_to_c2d(k) == name)
            assert torch.equal(parameter.detach(), stand_in[key].unsqueeze(2) if parameter.dim() == 5
                               else stand_in[key]), name

    os.remove(cached)  # reading the weights again would now fail (offline)
    resumed = dict(lr_zero, SOLVER__MAX_EPOCH=2)
    run(load_config(None, tiny_opts(root, out, **resumed)))
    assert [os.path.basename(p) for p in cu.list_checkpoints(out)][-1] == "checkpoint_epoch_00002.pyth"
    metrics = run(load_config(None, tiny_opts(root, out, **dict(resumed, TRAIN__ENABLE=False, TEST__ENABLE=True))))
    assert metrics["videos_scored"] == metrics["videos_listed"] > 0
    assert _initialised_lines(out) == 1
    assert not os.path.exists(cached)


def test_preflight_checks_a_weights_file_only_when_the_run_reads_it(tmp_path):
    missing = str(tmp_path / "absent.pth")
    checkpoint = tmp_path / "start.pyth"
    torch.save({"model": {}}, checkpoint)
    base = ["RESNET.IMAGENET_WEIGHTS", missing, "OUTPUT_DIR", str(tmp_path / "run")]
    with pytest.raises(ConfigError, match=rf"^RESNET\.IMAGENET_WEIGHTS: file not found: {missing}"):
        check_files(load_config(None, base))
    check_files(load_config(None, base + ["TRAIN.CHECKPOINT_FILE_PATH", str(checkpoint)]))  # fine-tuning
    check_files(load_config(None, base + ["TRAIN.ENABLE", "False", "TEST.CHECKPOINT_FILE_PATH", str(checkpoint)]))
    check_files(load_config(None, ["RESNET.IMAGENET_WEIGHTS", "IMAGENET1K_V2"]))  # a name needs no file
