"""DATA.DECODING_BACKEND torchcodec against PyAV on generated H.264 videos, and the
errors when torchcodec or FFmpeg is missing.

Both decode with FFmpeg's H.264 decoder and convert to RGB with swscale, so at the
native size every frame, training clip and 30-view test view is pixel-identical
(checked with torch.equal). Extraction with a resize is the one place they differ:
torchcodec converts to RGB and then resizes bilinearly with antialiasing, decord
and PyAV resize in YUV bicubically. Its frames are compared with an independent
formulation instead, PIL's antialiased bilinear resize of PyAV's native frames:
mean absolute difference at most 1 level and 99th percentile at most 4 levels
(measured on the test's video: 0.16 / 1 at short side 128, 0.20 / 2 at 32; PyAV's
own bicubic frames are 2.0-2.7 levels from either).

torchcodec is in the ``test`` extra, so a missing package fails these tests. Its
wheels load FFmpeg's shared libraries from the system, which pip cannot install;
.ci/run installs them, and where they are missing the tests that decode say so
and skip (the missing-package and missing-FFmpeg error tests run everywhere).
"""

import importlib.abc
import os
import runpy
import subprocess
import sys
import textwrap

import av
import numpy as np
import pytest
import torch
from PIL import Image

from cgnl_video.config import ConfigError
from cgnl_video.data import ManifestEntry, build_dataset, decode
from cgnl_video.prep import extract as ex
from cgnl_video.prep import index as idx
from cgnl_video.prep.video_io import frames_with_pyav, frames_with_torchcodec, output_size
from cgnl_video.utils import torchcodec_support as tcs
from data_fixtures import make_dataset, small_cfg
from log_capture import Said
from repo_paths import ROOT
from tools_fixtures import run_tool

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # torch on one thread in every test

REPO = ROOT
WIDTH, HEIGHT, FRAMES = 320, 240, 60


def require_torchcodec() -> None:
    """Fail without the package (the test extra installs it), skip without FFmpeg's libraries."""
    if sys.version_info < (3, 10):
        pytest.skip("torchcodec needs Python >= 3.10 (setup.py asks for it only there)")
    try:
        tcs.load_torchcodec()
    except tcs.TorchCodecUnavailable as error:
        if "not installed" in str(error):
            pytest.fail(f'{error} (pip install -e ".[test]" installs it)')
        pytest.skip(f"FFmpeg's shared libraries are missing here (.ci/run installs them): {error}")


def scene(num_frames: int, width: int, height: int) -> np.ndarray:
    """Textured, coloured frames (waves, gradient, noise and a moving block): (n, H, W, 3) uint8."""
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    out = np.empty((num_frames, height, width, 3), np.uint8)
    for k in range(num_frames):
        red = 128 + 100 * np.sin(cols / 17 + k / 5) * np.cos(rows / 23)
        green = 60 + 150 * (cols + rows + 4 * k) / (width + height + 4 * num_frames)
        blue = 128 + 90 * np.cos((cols - 2 * k) / 9 + rows / 31)
        image = np.stack([red, green, blue], -1) + rng.normal(0, 6, (height, width, 3))
        left = (7 * k) % (width - 40)
        image[20:60, left:left + 40] = (230, 40, 60)
        out[k] = image.clip(0, 255).astype(np.uint8)
    return out


def encode_h264(path: str, frames: np.ndarray, fps: int = 25) -> None:
    """H.264 mp4 (x264, crf 23) with a key frame every 12 frames and B-frames,
    so that reading a clip seeks and reorders; the index comes first, so that a file
    cut short keeps its first frames readable."""
    with av.open(path, "w", format="mp4", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.thread_count = 1
        stream.options = {"crf": "23", "preset": "veryfast", "x264-params": "keyint=12:bframes=2:b-adapt=0:scenecut=0"}
        for array in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        container.mux(stream.encode())


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Two H.264 mp4 files (4:3 and a short wide one) and manifests listing them."""
    root = str(tmp_path_factory.mktemp("h264"))
    encode_h264(os.path.join(root, "scene.mp4"), scene(FRAMES, WIDTH, HEIGHT))
    encode_h264(os.path.join(root, "wide.mp4"), scene(20, 192, 96), fps=30)
    entries = [ManifestEntry("scene.mp4", 0), ManifestEntry("wide.mp4", 1)]
    lists = make_dataset(root, {"train": entries, "test": entries})
    return root, lists


# ----------------------------------------------------------------------------- training and test reads


def test_reader_frames_equal_pyav(videos):
    require_torchcodec()
    root, _ = videos
    path = os.path.join(root, "scene.mp4")
    with av.open(path) as container:  # the file really has 5 key frames and B-frames (stored out of order)
        packets = [packet for packet in container.demux(video=0) if packet.size]
    pts = [packet.pts for packet in packets]
    assert sum(packet.is_keyframe for packet in packets) == FRAMES // 12 and pts != sorted(pts)
    indices = [59, 3, 3, 13, 12, 11, 40, 0, 59]  # out of order, repeated, around key frames
    with decode.VideoFileReader(path, "torchcodec") as codec, decode.VideoFileReader(path, "pyav") as pyav:
        assert codec.backend == "torchcodec" and pyav.backend == "pyav"
        assert codec.num_frames == pyav.num_frames == FRAMES
        frames = codec.read(indices)
        assert frames.shape == (len(indices), 3, HEIGHT, WIDTH) and frames.dtype == torch.uint8
        assert torch.equal(frames, pyav.read(indices))
        assert frames.is_contiguous(memory_format=torch.channels_last)  # fast uint8 resize downstream
        assert codec.frames_decoded == len(set(indices))  # each distinct frame asked for once


def test_train_clips_and_30_view_test_equal_pyav(videos):
    require_torchcodec()
    root, lists = videos
    cfgs = {backend: small_cfg(lists, root, **{"DATA.DECODING_BACKEND": backend, "TEST.NUM_ENSEMBLE_VIEWS": 10})
            for backend in ("torchcodec", "pyav")}
    train = {backend: build_dataset(cfg, "train") for backend, cfg in cfgs.items()}
    for epoch in (0, 1):
        for dataset in train.values():
            dataset.set_epoch(epoch)
        for index in range(len(train["pyav"])):
            clip, label, _ = train["torchcodec"][index]
            assert torch.equal(clip, train["pyav"][index][0]) and label == index
    tests = {backend: build_dataset(cfg, "test") for backend, cfg in cfgs.items()}
    for index in range(len(tests["pyav"])):
        views = tests["torchcodec"][index][0]
        assert views.shape[0] == 30 and torch.equal(views, tests["pyav"][index][0])
    assert tests["pyav"].failure_count() == tests["torchcodec"].failure_count() == 0


def test_cut_short_video_falls_back_to_pyav_like_decord(videos, tmp_path):
    """torchcodec sees the intact part only; it reports the file as cut short and PyAV,
    which goes by the header, decodes what it can: the same outcome as with PyAV alone."""
    require_torchcodec()
    root, _ = videos
    data = open(os.path.join(root, "scene.mp4"), "rb").read()
    path = tmp_path / "cut.mp4"
    path.write_bytes(data[: len(data) * 3 // 4])
    with decode.VideoFileReader(str(path), "pyav") as pyav:
        expected = pyav.read([0, 5])
    with Said.on_package_logger() as said:
        reader = decode.VideoFileReader(str(path), "torchcodec")
    assert reader.backend == "pyav" and reader.num_frames == FRAMES
    [(_, message)] = said.messages
    assert message.startswith("torchcodec failed on") and "cut short: its header says 60 frames" in message
    assert torch.equal(reader.read([0, 5]), expected)
    with pytest.raises(decode.DecodeError, match="with PyAV"):
        reader.read([FRAMES - 1])


# ----------------------------------------------------------------------------- extraction


def test_extraction_at_native_size_writes_the_same_jpegs_as_pyav(videos, tmp_path):
    require_torchcodec()
    root, _ = videos
    for fps in (None, 10, 50):  # every frame, frames dropped, frames repeated
        options = ex.ExtractOptions(short_side=0, fps=fps)
        written = {}
        for decoder in ("torchcodec", "pyav"):
            dst = tmp_path / f"{decoder}{fps}"
            outcome = ex.extract_video(ex.Task(root, str(dst), "scene.mp4", options, decoder))
            assert outcome.problem is None
            written[decoder] = [(dst / "scene" / name).read_bytes() for name in sorted(os.listdir(dst / "scene"))]
        assert len(written["pyav"]) == {None: FRAMES, 10: 24, 50: 120}[fps]
        assert written["torchcodec"] == written["pyav"]


def test_extraction_resize_matches_an_antialiased_bilinear_resize(videos):
    """torchcodec resizes bilinearly (its only filter): compare it with PIL's antialiased
    bilinear resize of PyAV's native frames, within the tolerance of the module doc."""
    require_torchcodec()
    root, _ = videos
    path = os.path.join(root, "scene.mp4")
    native = np.concatenate(list(frames_with_pyav(path, (WIDTH, HEIGHT), None, 25)))
    for short_side in (128, 32):
        size = output_size(WIDTH, HEIGHT, short_side)
        resized = np.concatenate(list(frames_with_torchcodec(path, size, None, 25))).astype(np.float64)
        reference = np.stack([np.asarray(Image.fromarray(f).resize(size, Image.Resampling.BILINEAR)) for f in native])
        difference = np.abs(resized - reference)
        assert resized.shape == (FRAMES, size[1], size[0], 3)
        assert difference.mean() <= 1.0 and np.percentile(difference, 99) <= 4, short_side


def test_extract_all_with_torchcodec_keeps_the_bad_input_rules(tmp_path):
    """In the spawned workers: good videos, a truncated one (torchcodec fails on its last
    packet, PyAV keeps the intact frames, the note says so) and an unreadable file."""
    require_torchcodec()
    src = tmp_path / "src"
    src.mkdir()
    encode_h264(str(src / "good.mp4"), scene(24, 64, 48))
    encode_h264(str(src / "cut.mp4"), scene(48, 64, 48))
    data = (src / "cut.mp4").read_bytes()
    (src / "cut.mp4").write_bytes(data[: len(data) // 2])
    (src / "text.mp4").write_text("not a video\n")
    dst = tmp_path / "frames"
    summary = ex.extract_all(str(src), str(dst), options=ex.ExtractOptions(short_side=32), workers=1,
                             progress=False, decoder="torchcodec")
    entries, failures = idx.read_index(str(dst)), idx.read_failures(str(dst))
    assert (summary.done, summary.failed, summary.kept_with_problem) == (2, 1, 1)
    assert (entries["good"].num_frames, entries["good"].width, entries["good"].height) == (24, 43, 32)
    assert failures["text.mp4"][0] == "failed"
    status, reason = failures["cut.mp4"]
    assert status == "kept" and "truncated" in reason and "(torchcodec: " in reason and "decoded with PyAV" in reason


def test_extraction_workers_import_neither_torch_nor_the_config_package():
    """Spawned extraction workers import cgnl_video.prep.extract: torchcodec support must
    not make that pay for torch or fvcore (torchcodec is imported when a video uses it)."""
    code = ("import sys, cgnl_video.prep.extract; "
            "print(sorted({'torch', 'fvcore', 'cgnl_video.config'} & set(sys.modules)))")
    run = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=REPO),
                         capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- torchcodec missing


class _HideTorchCodec(importlib.abc.MetaPathFinder):
    """An environment without the torchcodec package."""

    @staticmethod
    def hidden(name: str) -> bool:
        return name.split(".")[0] == "torchcodec"

    def find_spec(self, name, path=None, target=None):
        if self.hidden(name):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


@pytest.fixture()
def no_torchcodec(monkeypatch):
    monkeypatch.setattr(sys, "meta_path", [_HideTorchCodec(), *sys.meta_path])
    for name in [name for name in sys.modules if _HideTorchCodec.hidden(name)]:
        monkeypatch.delitem(sys.modules, name)
    tcs._probe.cache_clear()
    yield
    tcs._probe.cache_clear()


def test_missing_package_is_a_config_error_at_start_naming_the_key(no_torchcodec, videos, tmp_path, capsys):
    root, lists = videos
    message = r'^DATA.DECODING_BACKEND: torchcodec, but torchcodec is not installed .*pip install -e "\.\[torchcodec\]"'
    with pytest.raises(ConfigError, match=message):
        tcs.check_decoding_backend("torchcodec")
    tcs.check_decoding_backend("decord")  # the other backends need nothing
    # run_net stops before any work (no output folder); predict too
    out = tmp_path / "run"
    assert run_tool("run_net", ["--cfg", "", "DATA.DECODING_BACKEND", "torchcodec", "OUTPUT_DIR", str(out)]) == 2
    assert run_tool("predict", ["--cfg", "", "--checkpoint", "none.pyth", os.path.join(root, "scene.mp4"),
                                "--opt", "DATA.DECODING_BACKEND", "torchcodec"]) == 2
    err = capsys.readouterr().err
    assert err.count("DATA.DECODING_BACKEND: torchcodec, but torchcodec is not installed") == 2
    assert "apt-get install ffmpeg" in err and not out.exists()
    # a dataset built directly stops at the first video too: never a replaced sample
    dataset = build_dataset(small_cfg(lists, root, **{"DATA.DECODING_BACKEND": "torchcodec"}), "train")
    with pytest.raises(ConfigError, match="DATA.DECODING_BACKEND"):
        dataset[0]
    assert dataset.failure_count() == 0


def test_missing_package_stops_extraction_naming_the_flag(no_torchcodec, tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    dst = tmp_path / "frames"
    main = runpy.run_path(os.path.join(REPO, "data_prep", "extract_frames.py"), run_name="under_test")["main"]
    with pytest.raises(SystemExit) as stopped:
        main(["--src", str(src), "--dst", str(dst), "--decoding-backend", "torchcodec"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "--decoding-backend torchcodec: torchcodec is not installed" in err and ".[torchcodec]" in err
    with pytest.raises(tcs.TorchCodecUnavailable, match="not installed"):
        ex.extract_all(str(src), str(dst), decoder="torchcodec", progress=False)
    assert not dst.exists()


MISSING_FFMPEG = textwrap.dedent('''
    import sys
    from cgnl_video.config import ConfigError
    from cgnl_video.utils.torchcodec_support import check_decoding_backend
    try:
        check_decoding_backend("torchcodec")
    except ConfigError as error:
        print("ERROR", error)
''')


def test_missing_ffmpeg_libraries_say_how_to_install_them(tmp_path):
    """The installed torchcodec without its FFmpeg-linked libraries: what it meets
    on a machine without FFmpeg (its loader tries FFmpeg 9 down to 4 and finds none)."""
    if sys.version_info < (3, 10):
        pytest.skip("torchcodec needs Python >= 3.10")
    import importlib.util

    spec = importlib.util.find_spec("torchcodec")
    assert spec is not None, 'torchcodec is not installed (pip install -e ".[test]" installs it)'
    package = os.path.dirname(spec.origin)
    fake = tmp_path / "site" / "torchcodec"
    fake.mkdir(parents=True)
    for name in os.listdir(package):
        if not name.startswith(("libtorchcodec_core", "libtorchcodec_custom_ops")):  # the FFmpeg-linked ones
            os.symlink(os.path.join(package, name), fake / name)
    libs = os.path.join(os.path.dirname(package), "torchcodec.libs")
    if os.path.isdir(libs):
        os.symlink(libs, tmp_path / "site" / "torchcodec.libs")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "site"), REPO]))
    run = subprocess.run([sys.executable, "-c", MISSING_FFMPEG], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    message = run.stdout.split("ERROR ", 1)[1]
    assert message.startswith("DATA.DECODING_BACKEND: torchcodec, but torchcodec ")
    assert "FFmpeg" in message and "apt-get install ffmpeg" in message and "conda install" in message
