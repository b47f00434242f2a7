"""Stand-ins for what a user has downloaded or trained before following the docs, and
the sandbox the docs' commands run in (no tests here). Used by tests/docs/test_blocks_run.py.

Every stand-in is small but real and in the official format, made once per test
session under one folder, by the data_prep scripts themselves where the docs use
them (``StandIns.get(name)`` builds on first use). A stand-in's folder is laid out as
a sandbox (the repository's root): a path of the docs is the same path in it.

* ``synthetic``: ``demo_data/synthetic``, the demo's data (``make_synthetic`` ->
  ``extract_frames`` -> ``build_manifests generic``), 6 classes x (3 train + 2 test)
  videos of 48 frames at 12 fps (the demo's length: the docs' windows fit them).
* ``tools_demo``: ``output/tools_demo/{data,demo_cgnl,demo_nl}``: the two demo runs of
  docs/TOOLS.md (the demo config as shipped, 40 epochs, on ``synthetic``; a checkpoint at
  the end only).
* ``ucf101``: ``data/ucf101/UCF-101/<Class>/v_<Class>_gGG_cCC.avi`` (what ``unrar x
  UCF101.rar`` gives), ``UCF101TrainTestSplits-RecognitionTask.zip`` (classInd.txt with
  101 classes and the train/test lists of 3 splits, CRLF line ends, as published), and
  what the docs' commands make of them: ``data/ucf101/{ucfTrainTestlist,frames,split1}``.
* ``kinetics``: ``data/kinetics/videos/<label>/<ytid>_<start:06d>_<end:06d>.mp4``, the
  Kinetics-400 CSVs ``data/kinetics/annotations/{train,validate}.csv``
  (``label,youtube_id,time_start,time_end,split``) for 400 labels, the Mini-Kinetics-200
  id lists ``data/minikinetics200/{train,val}_ytid_list.txt`` of the clips of 200 of them
  (most clips are not downloaded: they are "no longer on YouTube"), and ``data/kinetics/frames``,
  ``data/minikinetics200/manifests`` made from them.
* ``generic``: ``my_videos/`` and ``my_lists/`` of DATA_PREP.md's "your own videos".
* ``get(name, builder)``: any other stand-in, e.g. the checkpoint a test-only command reads.
* ``torch_home``: torchvision's cache (``TORCH_HOME``); ``imagenet_standin(arch, name)``
  puts a state dict of torchvision's ``arch`` (random weights) under the file name of
  the weights' URL, where ``torchvision.models.<arch>(weights=name)`` looks first, so
  nothing is downloaded.
"""

import os
import shutil
import subprocess
import sys
import threading
import zipfile
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from repo_paths import ROOT

REPO = ROOT
#: top-level entries of the repository a sandbox does not copy (the package comes from
#: PYTHONPATH; outputs and data are what the docs' commands make or the stand-ins provide)
NOT_COPIED = {".git", "cgnl_video", "tests", "output", "demo_data", "data", "pretrained", "build", "dist",
              "__pycache__", ".pytest_cache", "my_videos", "my_frames", "my_lists", "my_manifests"}

UCF_CLASSES_WITH_CLIPS = ("ApplyEyeMakeup", "Archery", "Basketball")
KINETICS_LABELS_WITH_CLIPS = ("abseiling", "air drumming")


def run_script(path: str, argv: Sequence[str], env: Dict[str, str]) -> None:
    """``python <path> <argv>`` (a data_prep / tools script of the repository)."""
    result = subprocess.run([sys.executable, os.path.join(REPO, path), *argv], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, timeout=600)
    if result.returncode:
        raise RuntimeError(f"{path} {' '.join(argv)}: exit status {result.returncode}\n{result.stdout[-3000:]}")


def write_clip(path: str, seed: int, frames: int = 16, width: int = 96, height: int = 72) -> None:
    """A short real video (a drifting disc on noise): H.264 for .mp4, MPEG-4 part 2 for .avi."""
    import av

    from cgnl_video.prep.synthetic import SyntheticSpec, render_video

    pixels = render_video("disc", SyntheticSpec(num_frames=frames, width=width, height=height),
                          np.random.default_rng(seed))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with av.open(path, "w") as container:
        stream = container.add_stream("mpeg4" if path.endswith(".avi") else "libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.thread_count = 1
        for array in pixels:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        container.mux(stream.encode())


def _write(path: str, text: str, newline: str = "\n") -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline=newline) as handle:
        handle.write(text)


class StandIns:
    """The session's stand-ins under ``root``; ``get(name)`` makes one on first use."""

    def __init__(self, root: str, env: Dict[str, str]):
        self.root, self.env = root, env
        self.builders: Dict[str, Callable[[str], None]] = {
            "synthetic": self._synthetic, "tools_demo": self._tools_demo, "ucf101": self._ucf101,
            "kinetics": self._kinetics, "generic": self._generic, "torch_home": os.makedirs,
        }
        self._locks: Dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    def _lock(self, key: str) -> threading.Lock:
        """One lock per stand-in: blocks run two at a time, and each stand-in is made once."""
        with self._locks_lock:
            return self._locks.setdefault(key, threading.Lock())

    def get(self, name: str, builder: Optional[Callable[[str], None]] = None) -> str:
        """The folder of stand-in ``name`` (made now by ``builder``, default the one of
        that name, if it does not exist yet)."""
        folder = os.path.join(self.root, name)
        with self._lock(name):
            if not os.path.exists(folder + ".done"):
                shutil.rmtree(folder, ignore_errors=True)
                (builder or self.builders[name])(folder)
                open(folder + ".done", "w").close()
        return folder

    # ------------------------------------------------------------------------- builders

    def _synthetic(self, root: str) -> None:
        folder = os.path.join(root, "demo_data", "synthetic")
        run_script("data_prep/make_synthetic.py", ["--out", folder, "--classes", "6", "--videos-per-class", "3",
                                                   "--test-videos-per-class", "2"], self.env)
        run_script("data_prep/extract_frames.py", ["--src", f"{folder}/videos", "--dst", f"{folder}/frames",
                                                   "--short-side", "64", "--workers", "1", "--no-progress"], self.env)
        run_script("data_prep/build_manifests.py", ["generic", "--list-dir", f"{folder}/annotations",
                                                    "--root", f"{folder}/frames", "--out", f"{folder}/manifests"],
                                                   self.env)

    def _tools_demo(self, folder: str) -> None:
        """The two runs of docs/TOOLS.md with the demo config as shipped (40 epochs), on the
        small synthetic set, both at once (one core each)."""
        site = os.path.join(folder, "output", "tools_demo")
        shutil.copytree(os.path.join(self.get("synthetic"), "demo_data", "synthetic"), os.path.join(site, "data"))
        data = ["DATA.PATH_TO_DATA_DIR", "output/tools_demo/data/manifests",
                "DATA.PATH_PREFIX", "output/tools_demo/data/frames"]
        runs = {"demo_cgnl": [], "demo_nl": ["NONLOCAL.TYPE", "nl"]}
        processes = []
        for name, extra in runs.items():
            command = [sys.executable, os.path.join(REPO, "tools", "run_net.py"),
                       "--cfg", os.path.join(REPO, "configs", "demo", "C2D_CGNL_synthetic.yaml"),
                       *data, *extra, "OUTPUT_DIR", f"output/tools_demo/{name}",
                       "TRAIN.CHECKPOINT_PERIOD", "40"]  # the same run, without 38 checkpoints deleted again
            log = open(os.path.join(folder, f"{name}.log"), "w")
            processes.append((name, log, subprocess.Popen(command, cwd=folder, env=self.env, stdout=log,
                                                          stderr=subprocess.STDOUT)))
        for name, log, process in processes:
            status = process.wait(timeout=600)
            log.close()
            if status:
                with open(log.name, encoding="utf-8") as handle:
                    raise RuntimeError(f"stand-in run {name} failed:\n{handle.read()[-3000:]}")

    def _ucf101(self, root: str) -> None:
        folder = os.path.join(root, "data", "ucf101")
        classes = list(UCF_CLASSES_WITH_CLIPS) + [f"Action{i:03d}" for i in range(4, 102)]
        train, test = [], []
        for index, name in enumerate(UCF_CLASSES_WITH_CLIPS):
            for group, kind in ((8, train), (9, train), (1, test)):
                clip = f"{name}/v_{name}_g{group:02d}_c01.avi"
                write_clip(os.path.join(folder, "UCF-101", clip), seed=100 * index + group)
                kind.append(f"{clip} {index + 1}" if kind is train else clip)
        lists = os.path.join(folder, "ucfTrainTestlist")
        _write(os.path.join(lists, "classInd.txt"), "".join(f"{i + 1} {c}\n" for i, c in enumerate(classes)), "\r\n")
        for split in (1, 2, 3):
            _write(os.path.join(lists, f"trainlist0{split}.txt"), "".join(f"{row}\n" for row in train), "\r\n")
            _write(os.path.join(lists, f"testlist0{split}.txt"), "".join(f"{row}\n" for row in test), "\r\n")
        with zipfile.ZipFile(os.path.join(root, "UCF101TrainTestSplits-RecognitionTask.zip"), "w") as archive:
            for name in sorted(os.listdir(lists)):
                archive.write(os.path.join(lists, name), f"ucfTrainTestlist/{name}")
        run_script("data_prep/extract_frames.py", ["--src", f"{folder}/UCF-101", "--dst", f"{folder}/frames",
                                                   "--workers", "1", "--no-progress"], self.env)
        run_script("data_prep/build_manifests.py", ["ucf101", "--annotations", lists, "--split", "1",
                                                    "--root", f"{folder}/frames", "--out", f"{folder}/split1"],
                                                   self.env)

    def _kinetics(self, root: str) -> None:
        folder, mini = os.path.join(root, "data", "kinetics"), os.path.join(root, "data", "minikinetics200")
        labels = list(KINETICS_LABELS_WITH_CLIPS) + [f"action {i:03d}" for i in range(2, 400)]
        rows = {"train": [], "val": []}
        for index, label in enumerate(labels):
            clips = 2 if label in KINETICS_LABELS_WITH_CLIPS else 1
            for split, count in (("train", clips), ("val", 1)):
                for k in range(count):
                    youtube_id = f"{split[:2]}{index:03d}{k}abcde"  # 11 characters, like YouTube's
                    rows[split].append((label, youtube_id))
                    if label in KINETICS_LABELS_WITH_CLIPS:
                        write_clip(os.path.join(folder, "videos", label, f"{youtube_id}_000010_000020.mp4"),
                                   seed=1000 + 10 * index + k + (5 if split == "val" else 0))
        header = "label,youtube_id,time_start,time_end,split\n"
        for split, csv_name in (("train", "train.csv"), ("val", "validate.csv")):
            body = "".join(f'"{label}",{youtube_id},10,20,{split}\n' for label, youtube_id in rows[split])
            _write(os.path.join(folder, "annotations", csv_name), header + body)
            mini_ids = [youtube_id for label, youtube_id in rows[split] if label in labels[:200]]
            _write(os.path.join(mini, f"{split}_ytid_list.txt"), "".join(f"{y}\n" for y in mini_ids))
        run_script("data_prep/extract_frames.py", ["--src", f"{folder}/videos", "--dst", f"{folder}/frames",
                                                   "--workers", "1", "--no-progress"], self.env)
        run_script("data_prep/build_manifests.py", [
            "minikinetics", "--k400-annotations", f"{folder}/annotations/train.csv",
            f"{folder}/annotations/validate.csv", "--ytid-lists", mini,
            "--root", f"{folder}/frames", "--out", f"{mini}/manifests"], self.env)

    def _generic(self, folder: str) -> None:
        lists: Dict[str, List[str]] = {"train": [], "test": []}
        for index, (split, name) in enumerate([("train", "waving"), ("train", "clapping"), ("test", "waving")]):
            clip = f"{name}/{split}_{index}.mp4"
            write_clip(os.path.join(folder, "my_videos", clip), seed=2000 + index)
            lists[split].append(f"{clip}\t{name}")
        for split, rows in lists.items():
            _write(os.path.join(folder, "my_lists", f"{split}.txt"), "".join(f"{row}\n" for row in rows))

    # ------------------------------------------------------------------------- torchvision's cache

    def imagenet_standin(self, arch: str, weights_name: str) -> str:
        """A random-weight state dict of torchvision's ``arch`` where torchvision looks for
        the ImageNet weights ``weights_name`` (``TORCH_HOME/hub/checkpoints/<file of the URL>``)."""
        import torch
        import torchvision

        weights = torchvision.models.get_model_weights(arch)[weights_name]
        path = os.path.join(self.get("torch_home"), "hub", "checkpoints", os.path.basename(weights.url))
        with self._lock(path):
            if not os.path.exists(path):
                os.makedirs(os.path.dirname(path), exist_ok=True)
                torch.manual_seed(0)
                model = torchvision.models.get_model(arch, weights=None)
                torch.save(model.state_dict(), path + ".part")
                os.replace(path + ".part", path)
        return path


# ----------------------------------------------------------------------------- sandboxes


def make_sandbox(folder: str) -> str:
    """A copy of the repository's files (configs, tools, data_prep, benchmarks, docs,
    hubconf.py, ...) without the package, the tests and any outputs; returns it."""

    def ignore(directory: str, names: List[str]) -> List[str]:
        top = os.path.abspath(directory) == REPO
        return [n for n in names if n == "__pycache__" or n.endswith(".egg-info") or (top and n in NOT_COPIED)]

    shutil.copytree(REPO, folder, ignore=ignore)
    return folder


def provide(source: str, target: str) -> None:
    """Copy a stand-in into a sandbox; checkpoints (read-only for the docs' commands,
    replaced by rename when written) are linked instead of copied."""
    os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
    if os.path.isdir(source):
        def copy(src: str, dst: str) -> None:
            if src.endswith(".pyth"):
                os.symlink(src, dst)
            else:
                shutil.copy2(src, dst)

        shutil.copytree(source, target, copy_function=copy)
    else:
        shutil.copy2(source, target)
