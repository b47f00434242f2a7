"""Feature extraction over many inputs: what to extract, where it goes, what is
already done, and each rank's share (``tools/extract_features.py``).

Inputs are a manifest split (paths relative to DATA.PATH_PREFIX, labels kept) or
video files / frame folders (paths relative to ``root``). Each input gets
``<path>.npy`` (its features) and then ``<path>.json`` (its record and settings; the
input is complete when it exists), both atomically; ``index.jsonl`` and
``settings.json`` are written at the end. A rerun skips complete inputs made with
the same settings; one made with other settings is a failure naming the file. Under
torchrun every rank takes every world-th pending input (the test loader's
``ShardSampler``); failures are gathered and rank 0 writes the index. File formats:
docs/TOOLS.md, "Features for other models"; what a row is: ``analysis.features``.
"""

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import simplejson
import torch
from fvcore.common.config import CfgNode

from cgnl_video.analysis.features import HEAD_INPUT, PooledFeatures, video_features, window_features
from cgnl_video.data import DecodeError, ManifestEntry, ShardSampler, VideoDataset, build_loader
from cgnl_video.data.dataset import classes_path, manifest_path
from cgnl_video.data.manifest import read_classes, read_manifest
from cgnl_video.inference import InputError, dataset_for, input_entry
from cgnl_video.utils import distributed as du
from cgnl_video.utils.io import atomic_open, atomic_write_text, read_lines
from cgnl_video.utils.logging import progress

INDEX_FILE = "index.jsonl"
SETTINGS_FILE = "settings.json"


@dataclass(frozen=True)
class FeatureInput:
    """One input: ``name`` as given (in messages and the index), its entry (``None``
    when it cannot be read at all, with ``error``), its output name without suffix."""

    name: str
    entry: Optional[ManifestEntry]
    output: str
    label: Optional[str] = None
    error: str = ""


@dataclass
class Outcome:
    """What a run did: inputs extracted and skipped, ``(name, reason)`` of failures."""

    extracted: int = 0
    skipped: int = 0
    failed: List[Tuple[str, str]] = field(default_factory=list)


# ----------------------------------------------------------------------------- inputs
def output_stem(relative: str, is_folder: bool, name: str) -> str:
    """The output path without suffix of an input at ``relative`` (a frame folder keeps
    its name, a file loses its extension); ValueError for a path outside the root."""
    relative = os.path.normpath(relative)
    if os.path.isabs(relative) or relative == "." or relative.split(os.sep)[0] == "..":
        raise ValueError(f"{name} is not inside the root folder; output paths mirror the path relative to it")
    return relative if is_folder else os.path.splitext(relative)[0]


def split_inputs(cfg: CfgNode, split: str) -> Tuple[List[FeatureInput], List[str]]:
    """The entries of DATA.PATH_TO_DATA_DIR/{split}.txt (relative to DATA.PATH_PREFIX) and the classes."""
    classes = read_classes(classes_path(cfg))
    entries = read_manifest(manifest_path(cfg, split), num_classes=len(classes))
    return [FeatureInput(e.path, e, output_stem(e.path, e.num_frames is not None, e.path), classes[e.label])
            for e in entries], classes


def path_inputs(paths: Sequence[str], root: str) -> List[FeatureInput]:
    """Video files / frame folders (absolute, or relative to the current folder), their
    outputs mirroring their paths relative to ``root``; unreadable ones carry the error."""
    inputs = []
    for path in paths:
        stem = output_stem(os.path.relpath(os.path.abspath(path), os.path.abspath(root)), os.path.isdir(path),
                           f"{path} (root {root})")
        try:
            inputs.append(FeatureInput(path, input_entry(path), stem))
        except InputError as error:
            inputs.append(FeatureInput(path, None, stem, error=str(error)))
    return inputs


def read_path_list(path: str) -> List[str]:
    """The paths of a list file: one per line (a whole line, spaces included); blank
    lines and lines starting with ``#`` are skipped."""
    return [text for _where, text in read_lines(path) if not text.startswith("#")]


def check_unique_outputs(inputs: Sequence[FeatureInput]) -> None:
    """ValueError naming two inputs that would write the same feature file."""
    seen: Dict[str, str] = {}
    for item in inputs:
        if item.output in seen:
            raise ValueError(f"{seen[item.output]} and {item.name} would both write {item.output}.npy")
        seen[item.output] = item.name


# ----------------------------------------------------------------------------- files
def record_path(out_dir: str, item: FeatureInput) -> str:
    return os.path.join(out_dir, item.output + ".json")


def read_record(out_dir: str, item: FeatureInput) -> Optional[dict]:
    """The input's record (with its settings) when both of its files exist."""
    path = record_path(out_dir, item)
    if not (os.path.isfile(path) and os.path.isfile(os.path.join(out_dir, item.output + ".npy"))):
        return None
    with open(path, encoding="utf-8") as handle:
        return simplejson.load(handle)


def settings_difference(old: dict, new: dict) -> str:
    """``key: old -> new`` for every setting that differs."""
    keys = sorted(set(old) | set(new))
    return ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k))


def write_output(out_dir: str, item: FeatureInput, features: torch.Tensor, settings: dict, **extra: object) -> None:
    """``<output>.npy`` then ``<output>.json`` (record + settings), each atomically."""
    array = features.numpy().astype(np.float32)
    with atomic_open(os.path.join(out_dir, item.output + ".npy"), "wb") as handle:
        np.save(handle, array)
    record = {"path": item.name, "features": item.output + ".npy", "shape": list(array.shape), **extra}
    if item.label is not None:
        record["label"] = item.label
    atomic_write_text(record_path(out_dir, item), simplejson.dumps({**record, "settings": settings}) + "\n")


def write_index(out_dir: str, inputs: Sequence[FeatureInput], settings: dict) -> int:
    """``index.jsonl`` (the records of the complete inputs, in input order) and
    ``settings.json``; returns the number of records."""
    lines = []
    for item in inputs:
        record = read_record(out_dir, item)
        if record is not None and record.pop("settings") == settings:
            lines.append(simplejson.dumps(record) + "\n")
    atomic_write_text(os.path.join(out_dir, INDEX_FILE), "".join(lines))
    atomic_write_text(os.path.join(out_dir, SETTINGS_FILE), simplejson.dumps(settings, indent=2) + "\n")
    return len(lines)


def pending(out_dir: str, inputs: Sequence[FeatureInput], settings: dict) -> Tuple[List[FeatureInput], Outcome]:
    """Inputs still to extract, and the outcome so far (skipped, failed before reading)."""
    todo, outcome = [], Outcome()
    for item in inputs:
        if item.entry is None:
            outcome.failed.append((item.name, item.error))
            continue
        record = read_record(out_dir, item)
        if record is None:
            todo.append(item)
        elif record.get("settings") == settings:
            outcome.skipped += 1
        else:
            outcome.failed.append((item.name, f"{record_path(out_dir, item)} holds features made with other "
                                   f"settings ({settings_difference(record.get('settings', {}), settings)}); "
                                   "delete it or choose another output folder"))
    return todo, outcome


# ----------------------------------------------------------------------------- extraction
def extraction_settings(cfg: CfgNode, checkpoint: str, layer: Optional[str], stride: Optional[int],
                        precision: str) -> dict:
    """What the features depend on beyond the input (recorded with each output)."""
    d, t = cfg.DATA, cfg.TEST
    settings = {"checkpoint": os.path.abspath(checkpoint), "layer": layer or HEAD_INPUT, "precision": precision,
                "num_frames": d.NUM_FRAMES, "sampling_rate": d.SAMPLING_RATE, "mean": list(d.MEAN), "std": list(d.STD)}
    if stride is None:
        settings.update(mode="video", views=[t.NUM_ENSEMBLE_VIEWS, t.NUM_SPATIAL_CROPS],
                        crop_size=d.TEST_CROP_SIZE, full_frame=t.FULL_FRAME)
    else:
        settings.update(mode="window", window_stride=stride, short_side=d.VAL_SHORT_SIDE, crop_size=d.VAL_CROP_SIZE)
    return settings


def _unreadable_reason(dataset: VideoDataset, index: int) -> str:
    try:
        with dataset.open(index):
            pass
    except DecodeError as error:
        return str(error)
    return f"{dataset.path_of(index)}: no test view could be decoded"


def _extract_videos(cfg: CfgNode, features: PooledFeatures, dataset: VideoDataset, items: List[FeatureInput],
                    out_dir: str, settings: dict, device: torch.device, outcome: Outcome) -> None:
    """Per video: the test loader (which gives each rank its share) and the mean view feature."""
    loader = build_loader(cfg, "test", dataset)
    for views_list, _labels, indices in progress(loader, len(loader), "features", du.is_main_process()):
        for index, views in zip(indices.tolist(), views_list):
            if views.shape[0] == 0:
                outcome.failed.append((items[index].name, _unreadable_reason(dataset, index)))
                continue
            row = video_features(features, views, cfg, device, settings["precision"])
            write_output(out_dir, items[index], row, settings, views=int(views.shape[0]))
            outcome.extracted += 1


def _extract_windows(cfg: CfgNode, features: PooledFeatures, dataset: VideoDataset, items: List[FeatureInput],
                     out_dir: str, settings: dict, device: torch.device, outcome: Outcome) -> None:
    """Sliding windows: every world-th pending input on this rank, streamed window chunk by chunk."""
    world, rank = du.get_world_size(), du.get_rank()
    share = ShardSampler(len(items), world, rank)
    for index in progress(share, len(share), "features", du.is_main_process()):
        try:
            with dataset.open(index) as reader:
                rows, frames = window_features(features, reader, cfg, settings["window_stride"], device,
                                               settings["precision"])
        except DecodeError as error:
            outcome.failed.append((items[index].name, str(error)))
            continue
        write_output(out_dir, items[index], rows, settings, frames=[list(r) for r in frames])
        outcome.extracted += 1


def extract(cfg: CfgNode, features: PooledFeatures, inputs: Sequence[FeatureInput], classes: Sequence[str],
            out_dir: str, settings: dict, device: torch.device) -> Outcome:
    """Extract the pending inputs (this rank's share) with ``features`` (of the layer
    in ``settings``), then gather the outcome of all ranks; rank 0 writes the index.
    Every rank returns the same ``Outcome``."""
    check_unique_outputs(inputs)
    todo, outcome = pending(out_dir, inputs, settings)
    du.barrier()  # every rank has seen the folder before anyone writes to it
    local = Outcome()
    if todo:
        split = "test" if settings["mode"] == "video" else "val"
        dataset = dataset_for(cfg, [item.entry for item in todo], split, classes)
        run = _extract_videos if settings["mode"] == "video" else _extract_windows
        run(cfg, features, dataset, todo, out_dir, settings, device, local)
    for part in du.all_gather_object(local):
        outcome.extracted += part.extracted
        outcome.failed.extend(part.failed)
    order = {item.name: i for i, item in enumerate(inputs)}
    outcome.failed.sort(key=lambda failure: order[failure[0]])
    if du.is_main_process():
        write_index(out_dir, inputs, settings)
    du.barrier()
    return outcome
