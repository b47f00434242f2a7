"""benchmarks/gpu_validation.py: the quick CPU run reports every phase ok with its
figures; a phase past its timeout is stopped with its children and keeps what its
script had written; a failing phase is reported with its log and the others still run;
the GPU peak table (benchmarks/_common.py)."""

import json
import math
import os
import subprocess
import sys
import time

import pytest
import torch

from repo_paths import ROOT

BENCH = os.path.join(ROOT, "benchmarks")
if BENCH not in sys.path:
    sys.path.insert(0, BENCH)

import _common as common  # noqa: E402
import gpu_validation as gv  # noqa: E402


@pytest.mark.timeout(900)
def test_quick_cpu_run_reports_every_phase_ok_with_its_figures(tmp_path):
    """The CI run (README's command): every phase at toy sizes on the CPU."""
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, os.path.join(BENCH, "gpu_validation.py"), "--quick", "--device", "cpu",
                          "--out", str(out)], capture_output=True, text=True, timeout=870)
    result = json.loads((out / "gpu_validation.json").read_text())
    phases = result["phases"]
    errors = {name: record["error"] for name, record in phases.items() if record["status"] != "ok"}
    assert {name: record["status"] for name, record in phases.items()} == {
        name: "skipped" if phase.quick is None else "ok" for name, phase in gv.PHASES.items()}, errors
    assert run.returncode == 0, run.stderr[-2000:]
    res = {name: record["result"] for name, record in phases.items() if record["status"] == "ok"}
    assert all(r["machine"]["device"] == "cpu" and r["command"].startswith("python benchmarks/") for r in res.values())

    rows = res["train_step"]["rows"]
    assert {(r["variant"], r["mode"]) for r in rows} == {
        (v, m) for v in ("+1 NL", "+5 CGNL") for m in ("eager", "amp", "amp_fp16", "fast-nocompile")}
    assert {r["mode"]: r["precision"] for r in rows} == {"eager": "fp32", "amp": "bf16", "amp_fp16": "fp16",
                                                         "fast-nocompile": "bf16"}
    assert all(r["clips_per_s"] > 0 and r["peak_mem_bytes"] > 0 and r["flops_per_step"] > 0 for r in rows)
    assert all(r["finite"] and len(r["losses"]) >= 3 and all(map(math.isfinite, r["losses"])) for r in rows)
    assert all(r["mfu"] is None for r in rows)  # no peak figure for a CPU

    blocks = res["blocks"]
    for stage in ("res3", "res4"):
        assert all(0 < blocks["res"][stage][b]["kernel_fraction"] < 1 for b in ("CGNL dot", "CGNL rbf P=3"))
    assert list(blocks["sweep"]) == ["2x7x7", "4x14x14", "4x28x28"]
    assert all(row["time_s"] > 0 for shape in blocks["sweep"].values() for row in shape.values())

    e2e = res["end_to_end"]
    assert all(e2e["train"][f"DECODE_ON {m}"]["clips_per_s"] > 0 for m in ("worker", "device"))
    assert e2e["test"]["videos_per_s"] > 0 and e2e["test"]["model_only_videos_per_s"] > 0

    decode = res["decode_on"]
    per_clip = list(decode["train_cpu_s_per_clip"].values())
    assert per_clip[1] < per_clip[0] / 3  # the worker of device mode reads bytes instead of decoding
    assert decode["max_abs_diff_device_vs_worker"] == 0 and decode["jpeg_frames_per_s"]["decode_frames on cpu"] > 0

    text = (out / "gpu_validation.md").read_text()
    assert text.startswith("## GPU validation: no GPU") and "TOY SIZES" in text
    assert all(f"### {phase.title}" in text for phase in gv.PHASES.values())
    assert "| R-50 | +5 CGNL | amp_fp16 | fp16 |" in text  # the script's own table
    assert text.strip() in run.stdout


def test_a_phase_past_its_timeout_is_stopped_with_its_children_and_keeps_its_json(tmp_path):
    child_pid, script = tmp_path / "child.pid", tmp_path / "hang.py"
    script.write_text("import json, subprocess, sys, time\n"
              "json.dump({'measured': 1}, open(sys.argv[sys.argv.index('--json') + 1], 'w'))\n"
              "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
              f"open({str(child_pid)!r}, 'w').write(str(child.pid))\n"
              "print('| a table |', flush=True)\n"
              "sys.stderr.write('stuck in a CUDA call\\n'); sys.stderr.flush()\n"
                      "time.sleep(60)\n")
    start = time.time()
    record = gv.run_phase("hang", str(script), ["--quick"], 3.0, str(tmp_path))
    assert time.time() - start < 15
    assert record["status"] == "timeout" and record["result"] == {"measured": 1}
    assert "3 s timeout" in record["error"] and "stuck in a CUDA call" in record["error"]
    assert record["text"].strip() == "| a table |"
    pid = int(child_pid.read_text())
    for _ in range(50):  # the phase's child went with it (a zombie until init reaps it counts as gone)
        try:
            os.kill(pid, 0)
            with open(f"/proc/{pid}/stat") as handle:
                if handle.read().split()[2] == "Z":
                    break
        except (ProcessLookupError, FileNotFoundError):
            break
        time.sleep(0.1)
    else:
        pytest.fail("the phase's child process survived")


def test_a_failing_phase_is_reported_and_the_others_still_run(tmp_path, monkeypatch):
    fail, fine = tmp_path / "fail.py", tmp_path / "fine.py"
    fail.write_text("import sys\nsys.stderr.write('nvjpeg went away\\n')\nsys.exit(7)\n")
    fine.write_text("import json, sys\nargs = sys.argv\nassert args[args.index('--device') + 1] == 'cpu'\n"
                    "json.dump({'machine': {'device': 'cpu', 'cpu': 'Test CPU', 'date': 'today'}, 'x': 2},\n"
                    "          open(args[args.index('--json') + 1], 'w'))\nprint('| x | 2 |')\n")
    monkeypatch.setattr(gv, "PHASES", {
        "first": gv.Phase("The first phase", str(fail), [], ["--quick"], 60),
        "second": gv.Phase("The second phase", str(fine), [], ["--quick"], 60),
        "third": gv.Phase("Not in quick mode", str(fine), [], None, 60)})
    assert gv.main(["--quick", "--device", "cpu", "--out", str(tmp_path / "out")]) == 1
    result = json.loads((tmp_path / "out" / "gpu_validation.json").read_text())
    first, second, third = (result["phases"][n] for n in ("first", "second", "third"))
    assert first["status"] == "failed" and first["result"] is None
    assert "exit status 7" in first["error"] and "nvjpeg went away" in first["error"]
    assert second["status"] == "ok" and second["result"]["x"] == 2 and second["error"] is None
    assert third["status"] == "skipped"
    text = (tmp_path / "out" / "gpu_validation.md").read_text()
    assert text.startswith("## GPU validation: no GPU: Test CPU, today")
    assert "| first | **failed** |" in text and "| exit status 7; its log ends: |" in text
    assert "### The second phase\n\n| x | 2 |" in text and "### The first phase\n\nNo result (failed)." in text
    assert "| third | **skipped** |" in text


@pytest.mark.parametrize("name, board", [
    ("NVIDIA H100 80GB HBM3", "H100 SXM"), ("NVIDIA H100 PCIe", "H100 PCIe"), ("NVIDIA H100 NVL", "H100 NVL"),
    ("NVIDIA H200", "H200 SXM"), ("NVIDIA H200 NVL", "H200 NVL"), ("NVIDIA A100-SXM4-80GB", "A100"),
    ("NVIDIA A100 80GB PCIe", "A100"), ("NVIDIA A10", "A10"), ("NVIDIA L4", "L4"), ("NVIDIA L40S", "L40S"),
    ("Tesla V100-SXM2-16GB", "V100 SXM2"), ("Tesla V100-PCIE-32GB", "V100 PCIe"),
    ("Tesla V100S-PCIE-32GB", "V100S PCIe"), ("Tesla T4", "T4"),
    ("NVIDIA A10G", None), ("NVIDIA GH200 480GB", None), ("NVIDIA B200", None),
])
def test_gpu_peak_table(name, board):
    found = common.gpu_peaks(name)
    assert (found and found[0]) == board
    if board in ("V100 SXM2", "T4"):  # no bf16, no tf32: fp16 tensor cores and fp32 only
        assert found[1]["bf16"] is None and found[1]["tf32"] is None and found[1]["fp16"] > found[1]["fp32"]
    if board == "H100 SXM":
        assert found[1] == {"bf16": 989.5, "fp16": 989.5, "tf32": 494.5, "fp32": 67.0}
    assert common.peak_tflops(torch.device("cpu"), "bf16") is None  # no MFU on a CPU
    assert common.peak_tflops(torch.device("cpu"), "bf16", override=100.0) == 100.0


def test_time_interleaved_stops_at_its_time_budget():
    timing = common.time_interleaved({"nap": lambda: time.sleep(0.05)}, repeats=100, warmup=0, max_seconds=0.2)
    assert 2 <= timing["nap"]["repeats"] <= 5  # each round sleeps at least 0.05 s
    assert common.time_interleaved({"nap": lambda: None}, repeats=7, warmup=0)["nap"]["repeats"] == 7
