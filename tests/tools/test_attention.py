"""tools/visualize_attention.py and cgnl_video.analysis.attention: the maps come
from the block's own theta / phi, checked against the explicit matrices."""

import os

import pytest
import torch
from PIL import Image

from cgnl_video.analysis.attention import attention_maps, grid_position, normalize_maps, pick_block
from cgnl_video.analysis.attention_figure import attention_figure, default_frames, display_frames
from cgnl_video.config import load_config
from cgnl_video.inference import load_clip, load_model
from tools_fixtures import make_inputs, run_tool, save_tiny_checkpoint, write_tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # torch on one thread in every test

REF = (11, 40, 20)  # clip (frame, row, column) -> grid cell (1, 2, 1) of the 2 x 4 x 4 block grid


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("attention"))
    runs = {}
    for block in ("cgnl", "nl"):
        cfg_path = write_tiny_config(folder, block)
        runs[block] = (cfg_path, save_tiny_checkpoint(cfg_path, os.path.join(folder, block)))
    return {"runs": runs, "folder": folder, **make_inputs(os.path.join(folder, "inputs"))}


def run_with_projections(cfg_path, checkpoint, video, opts=()):
    """attention_maps on the video's clip, with the block's theta / phi outputs of
    the model's own forward pass captured by forward hooks."""
    cfg = load_config(cfg_path, list(opts))
    model = load_model(cfg, checkpoint)
    _name, block = pick_block(model)
    seen = {"theta": [], "phi": []}
    hooks = [getattr(block, key).register_forward_hook(lambda _m, _i, out, key=key: seen[key].append(out))
             for key in seen]
    clip = load_clip(cfg, video)
    probs, maps = attention_maps(model, clip, REF)
    for hook in hooks:
        hook.remove()
    with torch.no_grad():
        assert torch.allclose(probs, model(clip[None])[0], atol=1e-6)
    return block, maps, seen["theta"][0][0].double(), seen["phi"][0][0].double()


@pytest.mark.parametrize("kernel_opts", [(), ("CGNL.KERNEL", "embedded_gaussian", "CGNL.ORDER", "2",
                                              "CGNL.USE_SCALE", "True")])
def test_cgnl_maps_are_the_explicit_gnl_matrix_summed_over_channel_pairs(tiny, kernel_opts):
    cfg_path, checkpoint = tiny["runs"]["cgnl"]
    block, maps, theta, phi = run_with_projections(cfg_path, checkpoint, tiny["video"], kernel_opts)
    assert maps.kind == "cgnl" and maps.grid == (2, 4, 4) and maps.ref == (1, 2, 1)
    assert maps.labels == ["CGNL group 1", "CGNL group 2"]
    channels, positions = theta.shape[0] // 2, 32
    ref = (1 * 4 + 2) * 4 + 1
    for k in range(2):
        t = theta[k * channels:(k + 1) * channels].flatten()
        p = phi[k * channels:(k + 1) * channels].flatten()
        products = torch.outer(t, p)  # [(c, r), (c', j)] over the group's L = C' N entries
        matrix = sum(c * products**power for power, c in enumerate(block.coefficients))
        if block.use_scale:
            matrix = matrix / t.numel() ** 0.5
        expected = matrix.reshape(channels, positions, channels, positions)[:, ref].sum(dim=(0, 1))
        assert torch.allclose(maps.maps[k].flatten().double(), expected, rtol=1e-4, atol=1e-6)


def test_nl_map_is_the_affinity_row_upsampled_from_the_pooled_grid(tiny):
    cfg_path, checkpoint = tiny["runs"]["nl"]
    block, maps, theta, phi = run_with_projections(cfg_path, checkpoint, tiny["video"])
    assert maps.kind == "nl" and maps.maps.shape == (1, 2, 4, 4) and maps.ref == (1, 2, 1)
    assert tuple(phi.shape[1:]) == (2, 2, 2)  # (1, 2, 2) max-pool before phi
    logits = theta[:, 1, 2, 1] @ phi.flatten(1) * theta.shape[0] ** -0.5
    row = logits.softmax(0).reshape(2, 2, 2)
    for t in range(2):
        for y in range(4):
            for x in range(4):
                assert float(maps.maps[0, t, y, x]) == pytest.approx(float(row[t, y // 2, x // 2]), rel=1e-5)
    assert float(maps.maps[0].sum()) == pytest.approx(4.0, rel=1e-5)  # each pooled cell counted 4 times


def test_reference_and_normalisation_helpers():
    assert grid_position((31, 223, 0), (32, 224, 224), (4, 14, 14)) == (3, 13, 0)
    with pytest.raises(ValueError, match="outside the clip"):
        grid_position((32, 0, 0), (32, 224, 224), (4, 14, 14))
    assert default_frames(32, 4, 13) == [3, 13, 19, 27]
    maps = normalize_maps(torch.tensor([[[[-2.0, 0.0], [2.0, 1.0]]]]))
    assert maps.flatten().tolist() == [0.0, 0.5, 1.0, 0.75]


def test_tool_writes_the_panel_layout_with_a_second_model(tiny, capsys):
    cgnl_cfg, cgnl_checkpoint = tiny["runs"]["cgnl"]
    nl_cfg, nl_checkpoint = tiny["runs"]["nl"]
    out = os.path.join(tiny["folder"], "attention.png")
    argv = ["--cfg", cgnl_cfg, "--checkpoint", cgnl_checkpoint, tiny["frames"], "--ref", "11,40,20",
            "--out", out, "--threshold", "0.7", "--nl-cfg", nl_cfg, "--nl-checkpoint", nl_checkpoint]
    assert run_tool("visualize_attention", argv) == 0
    assert "blocks.4.inserted.4 (CGNL), grid (2, 4, 4), reference cell (1, 2, 1)" in capsys.readouterr().out
    # 2 rows (block time steps) x (input + 2 CGNL groups + NL) panels of 2 x 2 inches at 100 dpi
    assert Image.open(out).size == (4 * 200, 2 * 200 + 60)

    cfg = load_config(cgnl_cfg)
    clip = load_clip(cfg, tiny["frames"])
    map_sets = [attention_maps(load_model(load_config(path), ckpt), clip, REF)[1]
                for path, ckpt in (tiny["runs"]["cgnl"], tiny["runs"]["nl"])]
    figure = attention_figure(display_frames(clip, cfg.DATA.MEAN, cfg.DATA.STD), REF, map_sets, threshold=0.7)
    titles = [ax.get_title() for ax in figure.axes[:4]]
    assert titles == ["input", "CGNL group 1", "CGNL group 2", "NL"]
    assert [ax.get_ylabel() for ax in figure.axes[::4]] == ["frame 3", "frame 11"]
    heat = figure.axes[5].images[1].get_array()  # frame 11 (step 1), CGNL group 1, thresholded
    expected = normalize_maps(map_sets[0].maps)[0, 1]
    assert heat.mask.tolist() == (expected < 0.7).tolist()


def test_tool_rejects_a_model_without_nl_or_cgnl_block(tiny, tmp_path, capsys):
    cfg_path = write_tiny_config(str(tmp_path), "residual")
    checkpoint = save_tiny_checkpoint(cfg_path, str(tmp_path / "run"))
    argv = ["--cfg", cfg_path, "--checkpoint", checkpoint, tiny["video"], "--out", str(tmp_path / "x.png")]
    assert run_tool("visualize_attention", argv) == 2
    assert "no NL or CGNL block" in capsys.readouterr().err


def test_the_maps_come_from_any_block_that_provides_attention_map():
    """The analysis asks the block (``attention_map``, ``attention_kind``), not a list of
    block types: a block of the user's shows its maps, at the reference's flat index."""

    class Spot(torch.nn.Module):
        attention_kind = "spot"

        def forward(self, x):
            return x

        def attention_map(self, x, ref):
            maps = torch.zeros(x.shape[2:]).flatten()
            maps[ref] = x[0].sum()
            return maps.reshape(1, *x.shape[2:]), ["spot"]

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv3d(3, 2, 1), Spot(), torch.nn.AdaptiveAvgPool3d(1), torch.nn.Flatten())
    clip = torch.rand(3, 4, 6, 6)
    _probs, maps = attention_maps(model, clip, (1, 2, 3))
    assert (maps.block, maps.kind, maps.labels, maps.ref, maps.grid) == ("1", "spot", ["spot"], (1, 2, 3), (4, 6, 6))
    assert maps.maps[0].nonzero().tolist() == [[1, 2, 3]]
    assert torch.allclose(maps.maps[0, 1, 2, 3], model[0](clip[None]).sum())
