#!/usr/bin/env python
"""Finding 80,000 clips by name: the one-walk catalog of build_manifests.py.

    python benchmarks/bench_manifests.py [--clips 80000] [--repeats 5]

Writes the Mini-Kinetics-200 training set as a crawler leaves it (``--clips`` clips in 400
class folders) as three trees: videos (1-byte files), empty frame folders, and frame
folders with one JPEG each; times round-robin (wall clock, warm page cache) ``tree.walk``
against an ``os.walk`` catalog, and the whole ``build_minikinetics`` without video checks.
"""

import os
import time
from typing import Dict, List

import _common as common

from cgnl_video.prep import tree
from cgnl_video.prep.kinetics import build_minikinetics

CLASSES = 400


def clip_names(count: int) -> List[str]:
    """``(class, clip name)`` of ``count`` Kinetics-like clips."""
    return [(f"class_{k % CLASSES:03d}", f"yt{k:09d}_{k % 300:06d}_{k % 300 + 10:06d}") for k in range(count)]


def write_trees(work: str, clips) -> Dict[str, str]:
    roots = {name: os.path.join(work, name) for name in ("videos", "frames", "frames_all")}
    for label in {label for label, _ in clips}:
        for root in roots.values():
            os.makedirs(os.path.join(root, "train", label))
    for label, name in clips:
        with open(os.path.join(roots["videos"], "train", label, name + ".mp4"), "wb") as handle:
            handle.write(b"x")
        os.mkdir(os.path.join(roots["frames"], "train", label, name))
        folder = os.path.join(roots["frames_all"], "train", label, name)
        os.mkdir(folder)
        with open(os.path.join(folder, "000001.jpg"), "wb") as handle:
            handle.write(b"x")
    return roots


def os_walk_catalog(root: str, names) -> tree.Catalog:
    """The baseline: the same name index from os.walk (every folder listed)."""
    catalog = tree.Catalog(root)
    for folder, dirs, files in os.walk(root):
        rel = os.path.relpath(folder, root)
        for name in files:
            if name.lower().endswith(tree.VIDEO_EXTENSIONS):
                catalog.add(os.path.join(rel, name))
        if any(f.lower().endswith(tree.FRAME_EXTENSIONS) for f in files):
            catalog.add(rel)
        for name in list(dirs):
            if name in names:
                catalog.add(os.path.join(rel, name))
                dirs.remove(name)
    return catalog


def write_lists(work: str, clips) -> str:
    folder = os.path.join(work, "lists")
    os.makedirs(folder)
    with open(os.path.join(folder, "k400.csv"), "w", encoding="utf-8") as handle:
        handle.write("label,youtube_id,time_start,time_end,split\n")
        for label, name in clips:
            ytid, start, end = name.split("_")
            handle.write(f"{label},{ytid},{int(start)},{int(end)},train\n")
    with open(os.path.join(folder, "train_ytid_list.txt"), "w", encoding="utf-8") as handle:
        handle.writelines(name.split("_")[0] + "\n" for _, name in clips)
    return folder


def main() -> int:
    parser = common.parser(__doc__, "manifests", repeats=5, device=False)
    parser.add_argument("--clips", type=int, default=80000)
    args = parser.parse_args()
    device = common.start(args)
    with common.work_folder("", "bench_manifests_") as work:
        clips = clip_names(args.clips)
        start = time.perf_counter()
        roots = write_trees(work, clips)
        lists = write_lists(work, clips)
        common.say(f"wrote 3 trees of {args.clips} clips in {time.perf_counter() - start:.1f} s under {work}")
        names = {name for _, name in clips} | {name.split("_")[0] for _, name in clips}
        out = os.path.join(work, "out")
        cases = {}
        for kind in ("videos", "frames", "frames_all"):
            wanted = set() if kind == "frames_all" else names
            cases[f"tree.walk, {kind}"] = lambda r=roots[kind], w=wanted: tree.walk(r, w)
            cases[f"os.walk (baseline), {kind}"] = lambda r=roots[kind], w=wanted: os_walk_catalog(r, w)
        cases["build_minikinetics, videos"] = lambda: build_minikinetics(
            [os.path.join(lists, "k400.csv")], lists, roots["videos"], out, ["train"], 0, check_videos=False)
        for kind in ("videos", "frames", "frames_all"):  # both find every clip
            ours = tree.walk(roots[kind], set() if kind == "frames_all" else names)
            assert len(ours) == len(os_walk_catalog(roots[kind], names)) == args.clips, kind
        times = common.time_interleaved(cases, args.repeats, warmup=1, clock="wall")
    rows = []
    for kind in ("videos", "frames", "frames_all"):
        ours, base = times[f"tree.walk, {kind}"], times[f"os.walk (baseline), {kind}"]
        rows.append([kind, f"{ours['median_s']:.3f}", f"{base['median_s']:.3f}",
                     f"{base['median_s'] / ours['median_s']:.2f}x"])
    build = times["build_minikinetics, videos"]
    text = (common.markdown_table(["tree", "tree.walk s", "os.walk s (baseline)", "tree.walk is faster by"], rows)
            + f"\n\nbuild_minikinetics (train, {args.clips} clips, --no-check-videos): {build['median_s']:.2f} s")
    return common.report(args, device, {"clips": args.clips, "classes": CLASSES, "times": times}, text)


if __name__ == "__main__":
    raise SystemExit(main())
