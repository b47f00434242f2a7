"""DATA.DECODE_ON device against the worker path, on the CPU.

Tolerance: none. On the CPU the device path decodes with the same libjpeg-turbo
call as the worker path (``torchvision.io.decode_jpeg``; PIL, the worker's other
decoder, gives the same pixels) and runs the same uint8 resize, so every batch,
label, index, failure count and loss is asserted equal, not close. (On CUDA,
nvJPEG and the float resize of uint8 differ by a few grey levels: see
docs/DATA_PIPELINE.md.)
"""

import io
import logging
import os

import numpy as np
import pytest
import torch
from PIL import Image

from cgnl_video.config import load_config
from cgnl_video.data import ManifestEntry, VideoDataset, build_dataset, build_loader, gpu_augment, set_loader_epoch
from cgnl_video.data.decode import frame_file_name
from cgnl_video.data.gpu_augment import EncodedBatch, EncodedSample, jpeg_frame_size
from cgnl_video.engine.inputs import batch_to_device, decode_on_device, to_device
from cgnl_video.engine.launch import run
from cgnl_video.utils.logging import read_json_stats
from data_fixtures import make_dataset, small_cfg
from engine_helpers import make_tiny_dataset, one_thread, tiny_opts

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # torch on one thread in every test

CPU = torch.device("cpu")
PROGRESSIVE = "good2"  # the folder of progressive JPEGs
HEIGHT, WIDTH = 60, 84  # landscape, not a multiple of the 16-pixel MCU


def textured_frames(count: int, seed: int, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """Frames with texture, edges and noise (what makes decoders and resizers differ)."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (height // 6 + 2, width // 6 + 2, 3)).repeat(6, 0).repeat(6, 1)
    out = np.empty((count, height, width, 3), np.uint8)
    for t in range(count):
        moved = np.roll(blocks, 2 * t, axis=1)[:height, :width]
        out[t] = np.clip(moved + rng.normal(0, 12, (height, width, 1)), 0, 255)
    return out


def jpeg_bytes(frame: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", **{"quality": 90, **options})
    return buffer.getvalue()


def write_folder(folder: str, frames: np.ndarray, **options) -> None:
    os.makedirs(folder, exist_ok=True)
    for index, frame in enumerate(frames):
        with open(os.path.join(folder, frame_file_name(index)), "wb") as handle:
            handle.write(jpeg_bytes(frame, **options))


def bad_scan(data: bytes) -> bytes:
    """A JPEG whose headers are intact (it passes the workers' check) but whose scan
    holds 0xFF bytes that are no marker: both libjpeg-turbo decoders reject it."""
    scan = data.index(b"\xff\xda") + 14
    return data[:scan] + b"\xff" * 100 + data[scan + 100:]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """good0-2 (4:2:0, 4:4:4, progressive: made on the worker path in device mode too),
    gray (1 component) and a 24-frame folder;
    with_bad adds png (PNG files named .jpg: PIL reads them, on the worker path only)
    and the bad ones: scan (every frame fails to decode, headers fine), garbage (not
    JPEG), sizes (frames 4+ of another size), short (manifest says 30, folder has 6),
    missing."""
    root = str(tmp_path_factory.mktemp("decode_on"))
    write_folder(os.path.join(root, "good0"), textured_frames(16, 0))
    write_folder(os.path.join(root, "good1"), textured_frames(16, 1), subsampling=0)
    write_folder(os.path.join(root, "good2"), textured_frames(16, 2), progressive=True)
    write_folder(os.path.join(root, "gray"), textured_frames(16, 3)[..., 0])
    write_folder(os.path.join(root, "long"), textured_frames(24, 4, 84, 60))  # portrait
    write_folder(os.path.join(root, "scan"), textured_frames(8, 5))
    for index in range(8):
        path = os.path.join(root, "scan", frame_file_name(index))
        with open(path, "rb") as handle:
            corrupt = bad_scan(handle.read())
        with open(path, "wb") as handle:
            handle.write(corrupt)
    os.makedirs(os.path.join(root, "garbage"))
    for index in range(8):
        with open(os.path.join(root, "garbage", frame_file_name(index)), "wb") as handle:
            handle.write(b"not a jpeg" * 30)
    write_folder(os.path.join(root, "sizes"), textured_frames(4, 6))
    sizes = textured_frames(4, 7, HEIGHT + 8, WIDTH)
    for index, frame in enumerate(sizes, start=4):
        with open(os.path.join(root, "sizes", frame_file_name(index)), "wb") as handle:
            handle.write(jpeg_bytes(frame))
    write_folder(os.path.join(root, "short"), textured_frames(6, 8))
    os.makedirs(os.path.join(root, "png"))
    for index, frame in enumerate(textured_frames(8, 9)):
        Image.fromarray(frame).save(os.path.join(root, "png", frame_file_name(index)), format="PNG")
    good = [ManifestEntry("good0", 0, 16), ManifestEntry("good1", 1, 16), ManifestEntry("good2", 2, 16),
            ManifestEntry("gray", 0, 16), ManifestEntry("long", 1, 24)]
    bad = [ManifestEntry("png", 1, 8), ManifestEntry("scan", 2, 8), ManifestEntry("garbage", 0, 8),
           ManifestEntry("sizes", 1, 8), ManifestEntry("short", 2, 30), ManifestEntry("missing", 0, 16)]
    lists = make_dataset(root, {"train": good, "val": good, "test": good})
    bad_lists = make_dataset(os.path.join(root, "with_bad"), {"train": good + bad, "val": good + bad,
                                                               "test": good + bad})
    return root, lists, bad_lists


def cfg_of(data, lists, mode, **overrides):
    cfg = small_cfg(lists, data[0], **{"DATA.DECODE_ON": mode, "DATA.MAX_CONSECUTIVE_FAILURES": 30,
                                       "DATA.VAL_SHORT_SIDE": 40, "DATA.TEST_CROP_SIZE": 40, **overrides})
    cfg.DATA.MEAN, cfg.DATA.STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    return cfg


def loader_batches(cfg, split, epochs=(0, 1)):
    """Every batch of ``epochs`` as the model sees it: (inputs on the device, labels,
    indices); the failure count; the dataset."""
    loader = build_loader(cfg, split)
    batches = []
    for epoch in epochs:
        set_loader_epoch(loader, epoch)
        for batch in loader:
            clips, labels, indices = decode_on_device(batch, loader.dataset, CPU)
            if split == "test":
                inputs = [to_device(views, CPU, cfg) for views in clips]
            else:
                inputs = [batch_to_device((clips, labels, indices), loader.dataset, CPU, cfg)[0]]
            batches.append((inputs, labels.tolist(), indices.tolist()))
    return batches, loader.dataset.failure_count(), loader.dataset


def assert_same(worker, device):
    assert len(worker[0]) == len(device[0]) > 0
    for (inputs_w, labels_w, indices_w), (inputs_d, labels_d, indices_d) in zip(worker[0], device[0]):
        assert (labels_w, indices_w) == (labels_d, indices_d)
        assert len(inputs_w) == len(inputs_d)
        for w, d in zip(inputs_w, inputs_d):
            assert w.dtype == d.dtype == torch.float32 and w.shape == d.shape
            assert torch.equal(w, d)
    assert worker[1] == device[1]  # failure counts


# ----------------------------------------------------------------------------- equal batches


@pytest.mark.parametrize("split", ["train", "val", "test"])
@pytest.mark.parametrize("decoder", ["auto", "pil"])
def test_device_batches_equal_worker_batches(data, split, decoder):
    """Same seed / epoch / index: the same clips, bit for bit (the worker may decode with PIL)."""
    worker = loader_batches(cfg_of(data, data[1], "worker", **{"DATA.JPEG_DECODER": decoder}), split)
    device = loader_batches(cfg_of(data, data[1], "device", **{"DATA.JPEG_DECODER": decoder}), split)
    assert_same(worker, device)


def test_device_batches_through_worker_processes(data):
    """Items and batches crossing process boundaries (bytes in shared memory), and the
    channels-last input of MODEL.CHANNELS_LAST."""
    opts = {"MODEL.CHANNELS_LAST": True, "TRAIN.BATCH_SIZE": 3}
    worker = loader_batches(cfg_of(data, data[1], "worker", **opts), "train")
    device = loader_batches(cfg_of(data, data[1], "device", **opts, **{"DATA_LOADER.NUM_WORKERS": 2}), "train")
    assert_same(worker, device)
    assert device[0][0][0][0].is_contiguous(memory_format=torch.channels_last_3d)


def test_workers_read_bytes_and_decode_nothing(data, monkeypatch):
    """In device mode an item of a readable folder of baseline JPEGs is the plan and the
    JPEG bytes: no frame is decoded in the worker (the readers and decoders are made to
    fail)."""
    cfg = cfg_of(data, data[1], "device")
    datasets = {split: build_dataset(cfg, split) for split in ("train", "val", "test")}

    def no_decoding(*args, **kwargs):
        raise AssertionError("a frame was decoded in the worker")

    monkeypatch.setattr("cgnl_video.data.decode.FrameFolderReader.read", no_decoding)
    monkeypatch.setattr("torchvision.io.decode_jpeg", no_decoding)
    for split, dataset in datasets.items():
        for index in range(len(dataset)):
            if dataset.entries[index].path == PROGRESSIVE:
                continue
            sample, label, returned = dataset[index]
            assert isinstance(sample, EncodedSample) and (label, returned) == (dataset.entries[index].label, index)
            folder = dataset.path_of(index)
            expected = [open(os.path.join(folder, frame_file_name(i)), "rb").read()
                        for i in sorted(set(sample.plan.frames))]
            assert sample.frames == expected
            assert [sorted(set(sample.plan.frames))[p] for p in sample.positions] == sample.plan.frames


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("split", ["train", "val"])
def test_unreadable_samples_replaced_exactly_like_the_worker_path(data, split, caplog):
    """Every bad folder in the manifest, two epochs: the same replacements (labels,
    indices, clips), the same failure count and the same warnings in both modes."""
    results, messages, rejects = {}, {}, {}
    for mode in ("worker", "device"):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="cgnl_video.data"):
            results[mode] = loader_batches(cfg_of(data, data[2], mode, **{"TRAIN.BATCH_SIZE": 5}), split)
        messages[mode] = sorted(r.getMessage() for r in caplog.records if r.name == "cgnl_video.data.dataset")
        rejects[mode] = [r.getMessage() for r in caplog.records if r.name == gpu_augment.logger.name]
    assert_same(results["worker"], results["device"])
    # the scan folder's frames pass the workers' check: the device decoder rejects them,
    # counted each time, warned about once (rate-limited), with the decoder's message
    assert rejects["worker"] == [] and results["device"][2].device_rejects.count >= 1
    assert len(rejects["device"]) == 1 and f"{os.sep}scan" in rejects["device"][0]
    assert "the device decoder rejected a frame: " in rejects["device"][0]
    assert results["worker"][1] >= 5  # every kind of bad folder was hit
    assert messages["worker"] == messages["device"]
    for name in ("scan", "garbage", "sizes", "short", "missing"):
        assert any(f"{os.sep}{name}" in message for message in messages["device"])
    assert not any(f"{os.sep}png" in message for message in messages["device"])


def test_bad_scan_is_found_by_the_device_decoder_and_redone_on_the_worker_path(data, caplog):
    """A frame with intact headers goes to the device; the device decoder rejects it and
    the training process redoes the item on the worker path from where its read loop
    stood (the sample tried, the generator state, the tries left): the same clip, label,
    index and failure count as the worker path — also when the rejected sample was
    itself the replacement of a sample the worker had found unreadable."""
    worker = build_dataset(cfg_of(data, data[2], "worker"), "train")
    device = build_dataset(cfg_of(data, data[2], "device"), "train")
    scan = [entry.path for entry in device.entries].index("scan")
    redone = {"asked for": 0, "a replacement": 0}
    for epoch in range(6):
        worker.set_epoch(epoch)
        device.set_epoch(epoch)
        for item in range(len(device)):
            counts = worker.failure_count(), device.failure_count()
            expected, expected_label, expected_index = worker[item]
            sample, label, index = device[item]
            if not (isinstance(sample, EncodedSample) and index == scan):
                continue
            batch, labels, indices = gpu_augment.collate_encoded([(sample, label, index)])
            pixels, labels, indices = gpu_augment.decode_batch(batch, labels, indices, device, CPU)
            assert (labels.item(), indices.item()) == (expected_label, expected_index) != (label, scan)
            assert torch.equal(device.policy.item(pixels[0]), expected)
            assert worker.failure_count() - counts[0] == device.failure_count() - counts[1]
            redone["asked for" if item == scan else "a replacement"] += 1
            assert device.read_counts() == {"read_failures": device.failure_count(),
                                            "device_rejects": sum(redone.values())}
    assert min(redone.values()) > 0, redone


def test_a_frame_that_decodes_to_another_size_than_its_header_is_redone(data, monkeypatch):
    """The safety net behind the header check: were it to misread a size, the plan
    (the training box) would not fit the decoded frames; such samples are made on
    the worker path instead, giving the worker path's batches, with no read failure
    counted, but a device reject."""
    worker = loader_batches(cfg_of(data, data[1], "worker"), "train")

    def misread(data: bytes):
        size = jpeg_frame_size(data)
        return None if size is None else (size[0] + 8, size[1])

    monkeypatch.setattr(gpu_augment, "jpeg_frame_size", misread)
    device = loader_batches(cfg_of(data, data[1], "device"), "train")
    assert_same(worker, device)
    assert device[1] == 0
    baseline = [i for batch in device[0] for i in batch[2] if device[2].entries[i].path != PROGRESSIVE]
    assert device[2].device_rejects.count == len(baseline) > 0


def test_progressive_jpegs_are_made_on_the_worker_path(data):
    """nvJPEG's hardware decoder takes baseline JPEGs (torchvision decodes the others one
    by one, with a host sync each): a folder of progressive JPEGs written by PIL is made
    in the worker, on the worker path, with the pixels of DATA.DECODE_ON worker; the
    baseline folders still go to the device."""
    worker = build_dataset(cfg_of(data, data[1], "worker"), "train")
    device = build_dataset(cfg_of(data, data[1], "device"), "train")
    paths = [entry.path for entry in device.entries]
    with open(os.path.join(device.path_of(paths.index(PROGRESSIVE)), frame_file_name(0)), "rb") as handle:
        assert b"\xff\xc2" in handle.read()  # SOF2: progressive
    for epoch in range(2):
        worker.set_epoch(epoch)
        device.set_epoch(epoch)
        for index, path in enumerate(paths):
            sample, label, returned = device[index]
            if path != PROGRESSIVE:
                assert isinstance(sample, EncodedSample)
                continue
            assert isinstance(sample, torch.Tensor) and sample.dtype == torch.uint8
            expected, expected_label, expected_index = worker[index]
            assert (label, returned) == (expected_label, expected_index) == (device.entries[index].label, index)
            assert torch.equal(device.policy.item(sample), expected)


def one_encoded_batch(data):
    """The device-mode dataset and a batch of its first two samples (baseline JPEGs)."""
    dataset = build_dataset(cfg_of(data, data[1], "device"), "train")
    items = [dataset[index] for index in range(2)]
    assert all(isinstance(sample, EncodedSample) for sample, _label, _index in items)
    return dataset, gpu_augment.collate_encoded(items)


#: what torch and torchvision's nvJPEG decoder raise when the device, not a frame,
#: fails (torchvision re-raises everything inside its decoder as "Error while
#: decoding JPEG images: ...", a plain RuntimeError): (error, raised as)
DEVICE_FAILURES = {
    "oom": (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.50 GiB. GPU 0 has a total "
                                        "capacity of 79.19 GiB of which 1.02 GiB is free."),
            torch.cuda.OutOfMemoryError),
    "oom in nvjpeg": (RuntimeError("Error while decoding JPEG images: CUDA out of memory. Tried to allocate "
                                   "2.00 MiB. GPU 0 has a total capacity of 79.19 GiB"), torch.cuda.OutOfMemoryError),
    "nvjpeg allocator": (RuntimeError("Error while decoding JPEG images: Failed to decode batch: 5"),
                         torch.cuda.OutOfMemoryError),
    "cuda error": (getattr(torch, "AcceleratorError", RuntimeError)(
        "CUDA error: an illegal memory access was encountered"), gpu_augment.DeviceDecodeError),
    "stream sync": (RuntimeError("Error while decoding JPEG images: Failed to synchronize CUDA stream: 700"),
                    gpu_augment.DeviceDecodeError),
    "no nvjpeg": (RuntimeError("decode_jpegs_cuda: torchvision not compiled with nvJPEG support"),
                  gpu_augment.DeviceDecodeError),
}


@pytest.mark.parametrize("failing_call", ["the batch's", "a sample's"])
@pytest.mark.parametrize("kind", list(DEVICE_FAILURES))
def test_device_failures_are_raised_not_redone_on_the_cpu(data, monkeypatch, kind, failing_call):
    """Out of memory and CUDA errors of the device decoder stop the run with a message
    naming DATA.DECODE_ON (and what to lower), in the batch's decoder call or, after a
    bad frame failed that one, in a sample's; no sample is redone on the worker path."""
    dataset, (batch, labels, indices) = one_encoded_batch(data)
    error, raised_as = DEVICE_FAILURES[kind]
    calls = []

    def decode_jpeg(encoded, **kwargs):
        calls.append(len(encoded))
        if failing_call == "a sample's" and len(calls) == 1:
            raise RuntimeError("Error while decoding JPEG images: Failed to decode batch: 3")  # a bad frame
        raise error

    def no_redo(resume):
        raise AssertionError("a device failure was redone on the worker path")

    monkeypatch.setattr("torchvision.io.decode_jpeg", decode_jpeg)
    monkeypatch.setattr(dataset, "redo_on_worker_path", no_redo)
    with pytest.raises(raised_as, match="DATA.DECODE_ON") as caught:
        gpu_augment.decode_batch(batch, labels, indices, dataset, CPU)
    assert caught.value.__cause__ is error and str(error) in str(caught.value)
    assert "set DATA.DECODE_ON worker" in str(caught.value)
    if raised_as is torch.cuda.OutOfMemoryError:
        assert "lower TRAIN.BATCH_SIZE" in str(caught.value)
    assert len(calls) == (1 if failing_call == "the batch's" else 2)
    assert dataset.device_rejects.count == 0 and dataset.failure_count() == 0


def test_rejected_frames_are_warned_about_at_most_once_a_period(caplog):
    """Every rejected sample is counted; the warning (with the decoder's message) comes
    at most once per period and says how many it left out."""
    now = [100.0]
    rejects = gpu_augment.DeviceRejects(period=60.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger=gpu_augment.logger.name):
        for second in range(0, 60, 10):
            now[0] = 100.0 + second
            rejects.record(f"sample {second}: Unsupported marker type 0x1c")
        now[0] = 160.0
        rejects.record("sample 60: Huffman table 0x01 was not defined")
    messages = [record.getMessage() for record in caplog.records]
    assert rejects.count == 7 and len(messages) == 2
    assert "sample 0: Unsupported marker type 0x1c" in messages[0] and "(1 samples so far)" in messages[0]
    assert "sample 60: Huffman table 0x01 was not defined" in messages[1]
    assert "(7 samples so far; 5 more since the last such warning)" in messages[1]


class FakeStream:
    """The current CUDA stream, emulated on the CPU, with the frames the decoder returned
    (weak references): ``synchronize`` ends every read queued so far, so a frame freed
    before it is safe to reuse; ``freed_since_synchronized`` lists the others."""

    def __init__(self):
        self.synchronized = 0
        self.frames = []

    def synchronize(self):
        self.synchronized += 1
        self.frames = [frame for frame in self.frames if frame() is not None]

    def freed_since_synchronized(self):
        return [frame for frame in self.frames if frame() is None]


def test_every_device_decode_waits_for_the_current_stream(data, monkeypatch):
    """torchvision's CUDA decoder writes its outputs, allocated on the current stream,
    from its own stream without waiting (pytorch/vision#9606): memory freed on the
    current stream since its last synchronisation may still be read by queued kernels
    and must not be handed to a decode. Emulated on the CPU: the decoder remembers every
    frame it returned and checks, at each call, that none was freed since the current
    stream was last synchronised — across batches and in the per-sample decoding that
    follows a rejected frame."""
    import weakref

    dataset, (batch, labels, indices) = one_encoded_batch(data)
    stream = FakeStream()
    hazards, calls = [], []

    def decode_jpeg(encoded, mode, device):
        hazards.extend(stream.freed_since_synchronized())
        calls.append(len(encoded))
        if len(calls) == 2:  # the second batch's call fails on a bad frame: one decode per sample follows
            raise RuntimeError("Error while decoding JPEG images: Failed to decode batch: 3")
        frames = [torchvision_decode(data, mode=mode) for data in encoded]
        stream.frames.extend(weakref.ref(frame) for frame in frames)
        return frames

    from torchvision.io import decode_jpeg as torchvision_decode
    monkeypatch.setattr("torchvision.io.decode_jpeg", decode_jpeg)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: stream)
    cuda = torch.device("cuda")  # only the decoder and the stream would touch it: both are emulated
    for _ in range(2):
        pixels, _labels, _indices = gpu_augment.decode_batch(batch, labels, indices, dataset, cuda)
        assert len(pixels) == 2
    assert calls == [8, 8, 4, 4]
    assert hazards == []
    assert stream.synchronized == 4


def test_test_split_reports_the_same_unreadable_videos(data):
    worker = loader_batches(cfg_of(data, data[2], "worker"), "test", epochs=(0,))
    device = loader_batches(cfg_of(data, data[2], "device"), "test", epochs=(0,))
    assert_same(worker, device)
    views = [inputs.shape[0] for batch in device[0] for inputs in batch[0]]
    assert views == [9] * 6 + [0] * 5
    assert device[1] == 5


def test_frame_headers_the_workers_accept():
    frame = textured_frames(1, 0)[0]
    assert jpeg_frame_size(jpeg_bytes(frame)) == (HEIGHT, WIDTH)
    assert jpeg_frame_size(jpeg_bytes(frame[..., 0])) == (HEIGHT, WIDTH)  # grayscale
    assert jpeg_frame_size(jpeg_bytes(frame.transpose(1, 0, 2).copy())) == (WIDTH, HEIGHT)
    cmyk = io.BytesIO()
    Image.fromarray(frame).convert("CMYK").save(cmyk, format="JPEG")
    png = io.BytesIO()
    Image.fromarray(frame).save(png, format="PNG")
    data = jpeg_bytes(frame)
    progressive = jpeg_bytes(frame, progressive=True)
    assert b"\xff\xc2" in progressive and b"\xff\xc0" not in progressive
    extended = data.replace(b"\xff\xc0", b"\xff\xc1", 1)  # SOF1: extended sequential
    for rejected in (progressive, extended, cmyk.getvalue(), png.getvalue(), data[:-2], data[: len(data) // 2],
                     b"not a jpeg", data[:2] + b"\xff\xd9"):
        assert jpeg_frame_size(rejected) is None


# ----------------------------------------------------------------------------- configuration


def test_device_mode_needs_frame_folders(data):
    cfg = cfg_of(data, data[1], "device")
    with pytest.raises(ValueError, match=r"DATA\.DECODE_ON.*clip\.mp4"):
        VideoDataset.from_config(cfg, "test", [ManifestEntry("clip.mp4", 0)], classes=["a"])
    dataset = VideoDataset.from_config(cfg, "test", [ManifestEntry("clip.mp4", 0)], ["a"], decode_on="worker")
    assert dataset.decode_on == "worker"


def test_to_device_refuses_an_undecoded_batch(data):
    loader = build_loader(cfg_of(data, data[1], "device"), "val")
    clips, _labels, _indices = next(iter(loader))
    assert isinstance(clips, EncodedBatch)
    with pytest.raises(TypeError, match="batch_to_device"):
        to_device(clips, CPU, cfg_of(data, data[1], "device"))


# ----------------------------------------------------------------------------- training


def test_training_gives_the_same_losses_in_both_modes(tmp_path):
    """Two epochs of training, validation and the multi-view test of a tiny model:
    every json_stats loss and error equal in both modes."""
    make_tiny_dataset(str(tmp_path))
    stats = {}
    with one_thread():
        for mode in ("worker", "device"):
            out = tmp_path / mode
            run(load_config(None, tiny_opts(str(tmp_path), str(out), DATA__DECODE_ON=mode, DETERMINISTIC=True)))
            records = read_json_stats(str(out / "json_stats.log"))
            stats[mode] = [{key: record[key] for key in ("split", "epoch", "loss", "top1_err")} for record in records]
            rejects = [record.get("device_rejects") for record in records if record["split"] == "train"]
            assert rejects == ([0, 0] if mode == "device" else [None, None])
    assert [r["split"] for r in stats["device"]] == ["train", "val", "train", "val", "test"]
    assert stats["worker"] == stats["device"]


def test_training_stats_count_the_samples_the_device_decoder_rejected(tmp_path):
    """A train folder whose frames pass the workers' header check but not the decoder:
    each epoch's json_stats record counts it in ``device_rejects`` (since the start, like
    ``read_failures``), and the worker path then counts it as unreadable too."""
    make_tiny_dataset(str(tmp_path))
    manifests, frames = tmp_path / "manifests", tmp_path / "frames"
    write_folder(str(frames / "train" / "bad"), textured_frames(8, 0, 40, 40))
    for path in (frames / "train" / "bad").iterdir():
        path.write_bytes(bad_scan(path.read_bytes()))
    lines = (manifests / "train.txt").read_text().splitlines()[:-1]  # 12 samples: no partial batch dropped
    (manifests / "train.txt").write_text("\n".join(lines + [ManifestEntry("train/bad", 0, 8).to_line()]) + "\n")
    with one_thread():
        run(load_config(None, tiny_opts(str(tmp_path), str(tmp_path / "out"), DATA__DECODE_ON="device",
                                        SOLVER__MAX_EPOCH=2, TRAIN__EVAL_PERIOD=0)))
    train = [record for record in read_json_stats(str(tmp_path / "out" / "json_stats.log"))
             if record["split"] == "train"]
    assert [record["device_rejects"] for record in train] == [1, 2]
    assert all(record["read_failures"] >= record["device_rejects"] for record in train)
