"""decord is optional: where it has no wheels (macOS on Apple silicon, Linux aarch64)
setup.py does not ask for it, and the package extracts frames, trains and runs the
30-view test with PyAV, saying once that it does so."""

import ast
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement

from log_capture import Said
from repo_paths import ROOT

REPO = ROOT

# Makes `import decord` raise ImportError in a process and in every process it starts
# (the extraction workers are spawned): the situation of a platform without decord.
BLOCKER = '''
import sys

class _NoDecord:
    def find_spec(self, name, path=None, target=None):
        if name == "decord" or name.startswith("decord."):
            raise ImportError("No module named 'decord' (hidden by the test)")
        return None

sys.meta_path.insert(0, _NoDecord())
'''

RUN = textwrap.dedent('''
    import json, logging, os, sys
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s: %(message)s")
    try:
        import decord  # noqa: F401
        sys.exit("decord is not hidden")
    except ImportError:
        pass
    from cgnl_video.prep.extract import ExtractOptions, extract_all
    from cgnl_video.prep.generic import build_generic
    from cgnl_video.prep.synthetic import SyntheticSpec, make_synthetic

    root, out, cfg, tools = sys.argv[1:5]
    sys.path.insert(0, tools)
    from run_net import main
    make_synthetic(root, SyntheticSpec(num_classes=2, train_per_class=2, test_per_class=1, num_frames=16))
    videos = os.path.join(root, "videos")
    summary = extract_all(videos, os.path.join(root, "frames"), options=ExtractOptions(short_side=32),
                          workers=2, progress=False)
    print("EXTRACTED", json.dumps({"done": summary.done, "failures": summary.failures}))
    build_generic(os.path.join(root, "annotations"), videos, os.path.join(root, "manifests"))
    code = main(["--cfg", cfg, "DATA.PREPARE_SYNTHETIC", "False",
                 "DATA.PATH_TO_DATA_DIR", os.path.join(root, "manifests"), "DATA.PATH_PREFIX", videos,
                 "DATA.SAMPLING_RATE", "2", "MODEL.NUM_CLASSES", "2", "RESNET.WIDTH_PER_GROUP", "4",
                 "SOLVER.MAX_EPOCH", "1", "TRAIN.BATCH_SIZE", "4", "TRAIN.EVAL_PERIOD", "0",
                 "DATA_LOADER.NUM_WORKERS", "0", "TEST.BATCH_SIZE", "2", "OUTPUT_DIR", out])
    print("MAIN", code, "decord" in sys.modules)
''')


def test_extract_train_and_30_view_test_without_decord(tmp_path):
    blocker = tmp_path / "no_decord"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(blocker), REPO, os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    cfg = os.path.join(REPO, "configs", "demo", "C2D_CGNL_synthetic.yaml")
    run = subprocess.run([sys.executable, "-c", RUN, str(tmp_path / "data"), str(tmp_path / "out"), cfg,
                          os.path.join(REPO, "tools")],
                         env=env, capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-3000:]
    extracted = json.loads(output.split("EXTRACTED ", 1)[1].splitlines()[0])
    assert extracted == {"done": 6, "failures": {}}  # no video failed, none decoded with a note
    frames = tmp_path / "data" / "frames" / "train" / "slide_vertical" / "slide_vertical_001"
    assert sorted(os.listdir(frames))[-1] == "000016.jpg"
    assert "MAIN 0 False" in output
    # The videos themselves were read by the datasets (video-file manifests) for training and testing.
    assert open(tmp_path / "data" / "manifests" / "test.txt").read().split()[0].endswith(".mp4")
    assert "Multi-view test top-1" in output and "(2/2 videos, 30 views each)" in output
    metrics = json.loads((tmp_path / "out" / "test_metrics.json").read_text())
    assert (metrics["videos_scored"], metrics["videos_listed"]) == (2, 2)
    said = [line for line in output.splitlines() if "decord is not available" in line]
    assert len(said) == 1 and "decoded with PyAV" in said[0], said


def setup_requirements():
    """install_requires of setup.py, read without running it."""
    tree = ast.parse(open(os.path.join(REPO, "setup.py"), encoding="utf-8").read())
    constants = {
        target.id: ast.literal_eval(node.value)
        for node in tree.body if isinstance(node, ast.Assign)
        for target in node.targets if isinstance(target, ast.Name)
    }
    call = next(node for node in ast.walk(tree)
                if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "setup")
    listed = next(k.value for k in call.keywords if k.arg == "install_requires")
    return [Requirement(constants[e.id] if isinstance(e, ast.Name) else ast.literal_eval(e)) for e in listed.elts]


@pytest.mark.parametrize(
    "sys_platform, machine, installed",
    [
        ("linux", "x86_64", True),  # decord-0.6.0-py3-none-manylinux2010_x86_64.whl
        ("win32", "AMD64", True),  # decord-0.6.0-py3-none-win_amd64.whl
        ("linux", "aarch64", False),
        ("darwin", "arm64", False),
        ("darwin", "x86_64", False),  # wheels for CPython 3.6-3.8 only; we need >= 3.9
    ],
)
def test_setup_asks_for_decord_only_where_it_has_wheels(sys_platform, machine, installed):
    decord = [r for r in setup_requirements() if r.name == "decord"]
    assert len(decord) == 1 and decord[0].marker is not None
    environment = dict(default_environment(), sys_platform=sys_platform, platform_machine=machine)
    assert decord[0].marker.evaluate(environment) is installed
    assert any(r.name == "av" and r.marker is None for r in setup_requirements())  # PyAV everywhere


def test_video_readers_say_once_that_pyav_decodes(tmp_path, monkeypatch):
    from cgnl_video.data.decode import VideoFileReader
    from cgnl_video.prep.synthetic import encode_mp4
    from cgnl_video.utils.decord_support import load_decord

    paths = [str(tmp_path / f"{k}.mp4") for k in range(3)]
    for k, path in enumerate(paths):
        encode_mp4(path, np.full((6, 48, 64, 3), 40 * k, np.uint8), 25)
    monkeypatch.setitem(sys.modules, "decord", None)  # `import decord` raises ImportError
    load_decord.cache_clear()
    try:
        with Said.on_package_logger() as said:
            for k, path in enumerate(paths):
                with VideoFileReader(path, "decord") as reader:
                    assert reader.backend == "pyav" and reader.num_frames == 6
                    assert abs(int(reader.read([0, 5]).float().mean()) - 40 * k) <= 2
    finally:
        load_decord.cache_clear()
    lines = [message for _, message in said.messages if "decord" in message]
    assert len(lines) == 1 and "decoded with PyAV" in lines[0], lines
