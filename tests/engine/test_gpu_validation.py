"""benchmarks/gpu_validation.py: the quick CPU run reports every part ok; the watchdog
stops a part at its deadline and reports a worker that dies; a failing part does not
stop the others; the budget, the compile plan and the GPU peak table."""

import json
import math
import os
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from repo_paths import ROOT

REPO = ROOT
BENCH = os.path.join(REPO, "benchmarks")
if BENCH not in sys.path:
    sys.path.insert(0, BENCH)

import _common as common  # noqa: E402
import _validation_parts as parts  # noqa: E402
import gpu_validation as gv  # noqa: E402


@pytest.mark.timeout(900)
def test_quick_cpu_run_reports_every_part_ok(tmp_path):
    """The CI run: every part at toy sizes on the CPU, each ok, with its figures."""
    out = tmp_path / "out"
    # a budget far above the run's own time (about 30 s on 2 idle cores), so that a loaded
    # machine does not turn slow parts into timeouts; the repeats are capped by the sizes
    run = subprocess.run([sys.executable, os.path.join(BENCH, "gpu_validation.py"), "--quick", "--device", "cpu",
                          "--out", str(out), "--budget-s", "800"], capture_output=True, text=True, timeout=870)
    result = json.loads((out / "gpu_validation.json").read_text())
    statuses = {name: record["status"] for name, record in result["parts"].items()}
    errors = {name: record["error"] for name, record in result["parts"].items() if record["error"]}
    assert statuses == {name: "ok" for name in gv.ORDER}, errors
    assert run.returncode == 0, run.stderr[-2000:]
    # the parts with a warm-up ran it before their budget (outside it)
    assert all(result["parts"][name]["warmup_s"] > 0 for name in parts.WARMUPS)
    assert all(result["parts"][name]["phase"] == "measuring" for name in gv.ORDER)
    res = {name: record["result"] for name, record in result["parts"].items()}

    step_rows = res["train_step"]["R-50"]["rows"] + res["train_step"]["R-101"]["rows"]
    assert {(r["depth"], r["variant"], r["mode"]) for r in step_rows} == {
        (d, v, m) for d in (50, 101) for v in ("baseline", "+1 NL", "+1 CGNL", "+5 CGNL")
        for m in ("eager", "amp", "fast-nocompile")}
    assert all(r["clips_per_s"] > 0 and r["peak_mem_bytes"] > 0 and r["flops_per_step"] > 0 for r in step_rows)
    assert all(r["mfu"] is None for r in step_rows) and "MFU not reported" in res["train_step"]["mfu_note"]
    assert len(res["finite_loss"]) == 4
    assert all(math.isfinite(v) for check in res["finite_loss"].values() for v in check["losses"])
    assert all(row["frames_per_s"] > 0 for row in res["jpeg_decode"]["batches"].values())
    shares = [row["kernel_fraction"] for group in res["kernel_share"].values() for row in group.values()]
    assert len(shares) == 8 and all(0 < f < 1 for f in shares)
    assert res["nl_oom"]["largest_N_run"]["CGNL dot"] == 4 * 28 * 28
    assert res["nl_oom"]["nl_explicit_estimate"]["N_oom_RAM_batch1"] > 0
    for part in ("multiview_test", "data_stall"):
        assert set(k for k in res[part] if k.startswith("DECODE_ON")) == {"DECODE_ON worker", "DECODE_ON device"}
    assert all(res["multiview_test"][k]["videos_per_s"] > 0 for k in ("DECODE_ON worker", "DECODE_ON device"))
    assert all(res["data_stall"][k]["clips_per_s"] > 0 for k in ("DECODE_ON worker", "DECODE_ON device"))

    text = (out / "gpu_validation.md").read_text()
    assert text.startswith("## GPU validation: no GPU") and "TOY SIZES" in text
    assert all(f"### {title}" in text for title in parts.TITLES.values())
    assert text.strip() in run.stdout  # printed as well
    assert not (out / "parts").exists()


def _fake_worker(tmp_path, body: str) -> subprocess.Popen:
    """A process that plays the worker: ``body`` runs with ``record(status, **fields)``."""
    (tmp_path / "parts").mkdir(exist_ok=True)
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(f"""
        import json, os, subprocess, sys, time
        def record(name, **fields):
            path = os.path.join({str(tmp_path)!r}, "parts", name + ".json")
            with open(path + ".tmp", "w") as handle:
                json.dump(fields, handle)
            os.replace(path + ".tmp", path)
    """) + textwrap.dedent(body))
    log = open(tmp_path / "worker.log", "w")
    return subprocess.Popen([sys.executable, str(script)], stderr=log, start_new_session=True)


def test_watch_stops_a_part_past_its_deadline_with_its_process_group(tmp_path):
    proc = _fake_worker(tmp_path, f"""
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(tmp_path / 'child.pid')!r}, "w").write(str(child.pid))
        record("a", status="running", started=time.time(), deadline=time.time() + 0.5, budget_s=0.5,
               result={{"measured": 1}})
        time.sleep(60)
    """)
    start = time.time()
    outcome = gv.watch(proc, ["a", "b"], str(tmp_path), end=start + 60, grace=1.0, log=str(tmp_path / "worker.log"))
    assert outcome == "killed" and time.time() - start < 15
    record = parts.read_record(str(tmp_path / "parts" / "a.json"))
    assert record["status"] == "timeout" and "after its deadline" in record["error"]
    assert record["result"] == {"measured": 1}  # what it had measured is kept
    child = int((tmp_path / "child.pid").read_text())
    for _ in range(50):  # the worker's children went with it (a zombie until reaped by init is gone too)
        try:
            os.kill(child, 0)
            with open(f"/proc/{child}/stat") as handle:
                if handle.read().split()[2] == "Z":
                    break
        except (ProcessLookupError, FileNotFoundError):
            break
        time.sleep(0.1)
    else:
        pytest.fail("the worker's child process survived")


def test_watch_reports_a_worker_that_dies(tmp_path):
    proc = _fake_worker(tmp_path, """
        record("a", status="running", started=time.time(), deadline=time.time() + 60, budget_s=60, result={})
        sys.stderr.write("nvjpeg went away\\n")
        sys.exit(7)
    """)
    assert gv.watch(proc, ["a"], str(tmp_path), time.time() + 60, 1.0, str(tmp_path / "worker.log")) == "exited"
    record = parts.read_record(str(tmp_path / "parts" / "a.json"))
    assert record["status"] == "failed"
    assert "exited with code 7" in record["error"] and "nvjpeg went away" in record["error"]


def test_a_failing_part_does_not_stop_the_others(tmp_path):
    def broken(ctx):
        ctx.put("first", {"value": 1})
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    def half(ctx):
        ctx.attempt("good", lambda: {"value": 2})
        ctx.attempt("bad", lambda: {}["missing"])

    def fine(ctx):
        ctx.put("value", 3)

    device, sizes = torch.device("cpu"), parts.Sizes.quick()

    def make(name, remaining):
        return parts.Context(name, device, sizes, None, time.time() + 10, str(tmp_path / f"{name}.json"))

    registry = {"a": broken, "b": half, "c": fine}
    assert parts.run_parts(["a", "b", "c"], make, registry) == 0
    records = {n: parts.read_record(str(tmp_path / f"{n}.json")) for n in registry}
    assert [records[n]["status"] for n in "abc"] == ["failed", "failed", "ok"]
    assert "illegal memory access" in records["a"]["error"] and records["a"]["result"] == {"first": {"value": 1}}
    assert records["b"]["result"]["good"] == {"value": 2} and "KeyError" in records["b"]["result"]["bad"]["error"]
    assert records["c"]["result"] == {"value": 3} and records["c"]["error"] is None
    # on CUDA the worker stops after a failed part, for a fresh process to take the rest
    assert parts.run_parts(["a", "c"], make, registry, stop_after_failure=True) == 3


def _sleeping_worker(tmp_path, warm_s: float, warmup_limit_s: float) -> subprocess.Popen:
    """A worker process running the real ``run_parts`` on one part, finite_loss, whose
    warm-up sleeps ``warm_s`` and whose measurement then sleeps through its 1 s budget."""
    (tmp_path / "parts").mkdir(exist_ok=True)
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {BENCH!r})
        import torch
        import _validation_parts as parts

        def warm(ctx):
            ctx.doing("warm-up: a nap of {warm_s} s")
            time.sleep({warm_s})

        def part(ctx):
            ctx.put("first", 1)
            ctx.doing("sleeping through its budget")
            time.sleep(60)

        def make(name, remaining):
            return parts.Context(name, torch.device("cpu"), parts.Sizes.quick(), None, time.time() + 1.0,
                                 os.path.join({str(tmp_path)!r}, "parts", name + ".json"), {warmup_limit_s})

        parts.run_parts(["finite_loss"], make, {{"finite_loss": part}}, warmups={{"finite_loss": warm}},
                        deadline_of=lambda name, remaining: time.time() + 1.0)
    """))
    log = open(tmp_path / "worker.log", "w")
    return subprocess.Popen([sys.executable, str(script)], stderr=log, start_new_session=True)


def _wait_for_a_record(tmp_path, name):
    for _ in range(600):  # the worker imports torch and the package first
        if parts.read_record(str(tmp_path / "parts" / f"{name}.json")):
            return
        time.sleep(0.1)
    pytest.fail("the worker wrote no record")


def test_a_warm_up_is_outside_the_budget_and_a_part_that_sleeps_is_reported_with_what_it_was_doing(tmp_path):
    """The warm-up (3 s) outlasts the run's 2 s budget and the part's 1 s: it is not
    stopped for that. Then the part sleeps through its own budget: stopped, the record
    says so, with what it was doing and what it had measured."""
    proc = _sleeping_worker(tmp_path, warm_s=3.0, warmup_limit_s=30.0)
    _wait_for_a_record(tmp_path, "finite_loss")
    outcome = gv.watch(proc, ["finite_loss"], str(tmp_path), end=time.time() + 2.0, grace=1.0,
                       log=str(tmp_path / "worker.log"))
    record = parts.read_record(str(tmp_path / "parts" / "finite_loss.json"))
    assert outcome == "killed", (tmp_path / "worker.log").read_text()[-2000:]
    assert record["status"] == "timeout" and record["phase"] == "measuring"
    assert record["warmup_s"] >= 3.0 and record["budget_s"] <= 1.0  # the budget started after the warm-up
    assert "after its deadline" in record["error"] and "while doing: sleeping through its budget" in record["error"]
    assert record["result"] == {"first": 1}


def test_a_warm_up_past_its_own_limit_is_stopped_and_reported_as_such(tmp_path):
    proc = _sleeping_worker(tmp_path, warm_s=60.0, warmup_limit_s=1.0)
    _wait_for_a_record(tmp_path, "finite_loss")
    start = time.time()
    assert gv.watch(proc, ["finite_loss"], str(tmp_path), end=start + 60, grace=1.0,
                    log=str(tmp_path / "worker.log")) == "killed"
    assert time.time() - start < 15
    record = parts.read_record(str(tmp_path / "parts" / "finite_loss.json"))
    assert record["status"] == "timeout" and record["phase"] == "warm-up" and record["result"] == {}
    assert record["error"].startswith("stopped in its warm-up") and "1 s limit" in record["error"]
    assert "while doing: warm-up: a nap of 60.0 s" in record["error"]


def test_the_workers_share_one_inductor_cache(tmp_path, monkeypatch):
    """Compiled code survives a worker restart (a part stopped at its deadline)."""
    class Started(Exception):
        pass

    envs = []

    def popen(_cmd, **kwargs):
        envs.append(kwargs["env"])
        raise Started

    monkeypatch.setattr(gv.subprocess, "Popen", popen)
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    args = gv.parse_args(["--quick", "--device", "cpu", "--out", str(tmp_path)])
    args.work = str(tmp_path / "work")
    with pytest.raises(Started):
        gv.run_workers(args, time.time())
    assert envs[0]["TORCHINDUCTOR_CACHE_DIR"] == os.path.join(args.work, "inductor_cache")
    assert args.warmup_limit_s == 120 and gv.parse_args([]).warmup_limit_s == 300


def test_markdown_reports_failures_and_renders_results(tmp_path):
    records = {
        "finite_loss": {"status": "ok", "seconds": 1.0, "budget_s": 5.0, "error": None, "result": {
            "bf16, R-50 +1 NL": {"autocast": "bfloat16", "losses": [5.3, 5.2], "loss_scale": [None, None],
                                 "skipped_steps": 0},
            "fp16, R-50 +5 CGNL": {"error": "FloatingPointError: non-finite loss at step 2"}}},
        "data_stall": {"status": "timeout", "seconds": 30.0, "budget_s": 19.0, "warmup_s": 4.2,
                       "error": "stopped 10 s after", "result": {}},
    }
    result = {"machine": common.machine_info(torch.device("cpu")), "command": "python x", "json": "x.json",
              "load_average_1min": [1.0, 1.0], "sizes_note": "TOY", "total_s": 31.0, "worker_processes": 2,
              "settings": {"budget_s": 100.0}, "parts": records}
    text = gv.markdown(result)
    assert "| data_stall | **timeout** | 30 | 19 | 4 | stopped 10 s after |" in text
    assert "| bf16, R-50 +1 NL | bfloat16 | 5.300, 5.200 |  | finite |" in text
    assert "**failed**: FloatingPointError: non-finite loss at step 2" in text
    assert "No result (timeout)." in text


def test_deadlines_share_the_time_left():
    now, end = 1000.0, 1420.0
    first = gv.part_deadline("finite_loss", gv.ORDER, now, end)
    assert first == pytest.approx(now + 420 * gv.SHARES["finite_loss"] / sum(gv.SHARES.values()))
    # time a part leaves unused goes to the later ones; the last one gets all that is left
    assert gv.part_deadline("train_step", ["train_step"], 1100.0, end) == end
    later = gv.part_deadline("data_stall", ["data_stall", "train_step"], 1100.0, end)
    assert later == pytest.approx(1100 + 320 * 0.13 / 0.63)
    assert gv.part_deadline("data_stall", ["data_stall", "train_step"], 1500.0, end) == 1500.0  # past the end
    assert sum(gv.SHARES.values()) == pytest.approx(1.0)
    assert gv.grace_seconds(420) == 21 and gv.grace_seconds(100) == 10 and gv.grace_seconds(5000) == 30


def test_compiled_cases_are_skipped_when_their_compile_does_not_fit(tmp_path):
    """train_step at toy sizes with compile on and 5 s left of a 60 s compile estimate:
    the uncompiled cases are timed, every compiled one says why it was not built."""
    options = gv.parse_args(["--quick", "--device", "cpu", "--compile", "on"])
    options.compile_on = True
    ctx = parts.Context("train_step", torch.device("cpu"), parts.Sizes.quick(), options, time.time() + 60,
                        str(tmp_path / "train_step.json"))
    compile_s, threads = [], torch.get_num_threads()
    torch.set_num_threads(1)  # as the worker on a CPU: several threads on a shared CPU are far slower
    try:
        rows = parts.train_step_depth(ctx, 50, time.time() + 5.0, compile_s)["rows"]
    finally:
        torch.set_num_threads(threads)
    timed = [r for r in rows if "clips_per_s" in r]
    skipped = [r for r in rows if r["mode"] == "fast"]
    assert len(timed) == 12 and all(r["mode"] in parts.STEP_MODES for r in timed)
    assert [r["variant"] for r in skipped] == list(parts.COMPILE_ORDER)
    assert all(r["skipped"].startswith("not compiled: about 60 s to compile") for r in skipped)
    assert compile_s == []
    assert parts.read_record(ctx.path)["result"]["R-50"]["rows"][0]["clips_per_s"] > 0  # put as it went
    assert parts.compile_plan(100.0, 20.0, 80.0) and not parts.compile_plan(100.0, 20.1, 80.0)


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
