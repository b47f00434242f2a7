#!/usr/bin/env python
"""Does a CGNL block capture a relation that C2D and NL miss? A controlled CPU experiment.

    python benchmarks/bench_claim.py --jobs 2 [--quick]   # full: 15 runs of 400 steps

Task: ``cgnl_video.prep.relation_task`` (label = does B's colour partner A's texture, A and
B in different frames; no object, frame or average carries the label). Models, from the
package's builders: a narrow frame-wise C2D R-50 (no temporal stride or pool, 2x64x64),
the same + one block after res4 block 4 (CGNL paper, Sec. 4.2): the simple residual block
(Table 3's control), NL (embedded Gaussian), CGNL dot G=1 and G=4. Each trains with the
same clips, steps and SGD cosine schedule (``engine.optim``) for every seed; the seed
sets the data and the initialisation, so differences are paired by seed. Reports top-1
per model (mean, std), paired differences with a 95 % t-interval, and for NL / CGNL the
share of a reference position's map (on A) that falls on B and the reverse, against
chance (one cell of the grid). Writes benchmarks/results/claim.json; docs/MODELS.md, "Relation task".
"""

import argparse
import math
import multiprocessing
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from cgnl_video.analysis.attention import attention_maps
from cgnl_video.config import load_config
from cgnl_video.engine.optim import build_optimizer, lr_at, set_lr
from cgnl_video.models import build_model
from cgnl_video.prep.relation_task import RelationBatch, RelationSpec, make_batch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as common  # noqa: E402

RES4 = ["NONLOCAL.LOCATION", "[[], [], [4], []]"]
MODELS: Dict[str, List[str]] = {
    "C2D": [],
    "+residual (G=4)": ["NONLOCAL.TYPE", "residual", "CGNL.GROUPS", "4", *RES4],
    "+NL": ["NONLOCAL.TYPE", "nl", "NL.POOL", "[1, 1, 1]", *RES4],
    "+CGNL dot G=1": ["NONLOCAL.TYPE", "cgnl", "CGNL.GROUPS", "1", *RES4],
    "+CGNL dot G=4": ["NONLOCAL.TYPE", "cgnl", "CGNL.GROUPS", "4", *RES4],
}
#: two-sided 95 % t quantiles by degrees of freedom (paired differences of n seeds: n - 1)
T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26}


def model_opts(spec: RelationSpec, steps: int, width: int, seed: int) -> List[str]:
    """Config overrides shared by every model: the frame-wise narrow C2D and the schedule."""
    crop = str(spec.size)
    return ["RNG_SEED", str(seed), "MODEL.NUM_CLASSES", "2", "MODEL.DROPOUT_RATE", "0.0",
            "RESNET.WIDTH_PER_GROUP", str(width), "RESNET.STEM_CONV_STRIDE", "[1, 2, 2]",
            "RESNET.STEM_POOL_KERNEL", "[1, 3, 3]", "RESNET.STEM_POOL_STRIDE", "[1, 2, 2]",
            "RESNET.POOL2_KERNEL", "[1, 1, 1]", "RESNET.POOL2_STRIDE", "[1, 1, 1]",
            "DATA.NUM_FRAMES", str(spec.num_frames), "DATA.SAMPLING_RATE", "1", "DATA.TRAIN_CROP_SIZE", crop,
            "DATA.VAL_SHORT_SIDE", crop, "DATA.VAL_CROP_SIZE", crop, "DATA.TEST_CROP_SIZE", crop,
            # one "epoch" of the schedule = one step
            "SOLVER.LR_POLICY", "cosine", "SOLVER.BASE_LR", "0.1", "SOLVER.MAX_EPOCH", str(steps),
            "SOLVER.WARMUP_EPOCHS", str(float(max(1, steps // 10))), "SOLVER.WARMUP_START_LR", "0.01"]


def train(opts: Sequence[str], spec: RelationSpec, seed: int, steps: int, batch: int) -> Tuple[torch.nn.Module, float]:
    """A fresh model of ``opts`` trained for ``steps`` SGD steps on train clips of ``seed``;
    it (in eval mode) and its mean training loss over the last tenth of the steps."""
    cfg = load_config(None, list(opts))
    torch.manual_seed(seed)
    model = build_model(cfg).train()
    optimizer = build_optimizer(model, cfg)
    losses = []
    for step in range(steps):
        set_lr(optimizer, lr_at(cfg, step))
        data = make_batch(spec, seed, "train", range(step * batch, (step + 1) * batch))
        loss = F.cross_entropy(model(data.clips), data.labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    tail = losses[-max(1, steps // 10):]
    return model.eval(), sum(tail) / len(tail)


@torch.no_grad()
def accuracy(model: torch.nn.Module, test: RelationBatch, batch: int = 64) -> float:
    """Top-1 (%) of the eval-mode model on ``test``."""
    right = 0
    for start in range(0, len(test.labels), batch):
        logits = model(test.clips[start:start + batch])
        right += int((logits.argmax(1) == test.labels[start:start + batch]).sum())
    return 100.0 * right / len(test.labels)


def centre(cell: Sequence[int], spec: RelationSpec) -> tuple:
    """Clip position (frame, row, column) at the middle of a grid cell."""
    step = spec.size // spec.grid
    return cell[0], cell[1] * step + step // 2, cell[2] * step + step // 2


def _share(model: torch.nn.Module, clip: torch.Tensor, ref: Sequence[int], other: Sequence[int],
           spec: RelationSpec) -> List[float]:
    """Per map: |map| on cell ``other`` / |map| summed, for the reference at cell ``ref``."""
    _probs, maps = attention_maps(model, clip, centre(ref, spec))
    if tuple(maps.grid) != (spec.num_frames, spec.grid, spec.grid):
        raise ValueError(f"block grid {maps.grid} is not one cell per object cell; change RelationSpec.grid")
    weight = maps.maps.abs()
    return (weight[:, other[0], other[1], other[2]] / weight.flatten(1).sum(1).clamp_min(1e-12)).tolist()


def partner_share(model: torch.nn.Module, test: RelationBatch, spec: RelationSpec, clips: int) -> Dict:
    """Mean share of |map| on B's cell for the reference at A's cell (NL: its softmax row;
    CGNL: each group's map, ``analysis.attention``), and on A's for the reference at B's,
    over the first ``clips`` test clips; chance is one cell of T x grid x grid."""
    a_to_b, b_to_a = [], []
    for i in range(min(clips, len(test.labels))):
        a_to_b += _share(model, test.clips[i], test.a_cells[i], test.b_cells[i], spec)
        b_to_a += _share(model, test.clips[i], test.b_cells[i], test.a_cells[i], spec)
    return {"share_a_to_b": round(statistics.mean(a_to_b), 4), "share_b_to_a": round(statistics.mean(b_to_a), 4),
            "chance": round(1 / (spec.num_frames * spec.grid ** 2), 4), "maps": len(a_to_b)}


def summary(values: Sequence[float]) -> Dict:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": round(statistics.mean(values), 2), "std": round(std, 2)}


def paired(a: Sequence[float], b: Sequence[float]) -> Dict:
    """a - b per seed: mean, std, 95 % t half-width, and whether the interval excludes 0."""
    diffs = [x - y for x, y in zip(a, b)]
    out = summary(diffs)
    n = len(diffs)
    half = T95.get(n - 1, 2.0) * out["std"] / math.sqrt(n) if n > 1 else float("inf")
    out.update(diffs=[round(d, 2) for d in diffs], ci95=round(half, 2), exceeds_spread=abs(out["mean"]) > half)
    return out


def task_spec(args: argparse.Namespace) -> RelationSpec:
    return RelationSpec(num_frames=args.frames, frame_gap=args.gap, distractors=args.distractors,
                        min_distance=args.min_distance)


def run_one(name: str, seed: int, args: argparse.Namespace) -> Dict:
    """Train model ``name`` with ``seed``; its test top-1, final loss, time and (NL / CGNL) map shares."""
    torch.set_num_threads(args.threads)
    spec = task_spec(args)
    test = make_batch(spec, seed, "test", range(args.test))
    start = time.perf_counter()
    model, loss = train(model_opts(spec, args.steps, args.width, seed) + MODELS[name], spec, seed, args.steps,
                        args.batch)
    record = {"seed": seed, "top1": accuracy(model, test), "train_loss": round(loss, 4),
              "train_s": round(time.perf_counter() - start, 1)}
    if "NL" in name:
        record["attention"] = partner_share(model, test, spec, args.attention_clips)
    print(f"{name} seed {seed}: {record}", file=sys.stderr, flush=True)
    return record


def run(args: argparse.Namespace) -> Dict:
    """Every model x seed (``args.jobs`` processes), summaries and paired differences."""
    cases = [(name, seed) for name in args.models for seed in range(args.seeds)]
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            records = list(pool.map(run_one, *zip(*cases), [args] * len(cases)))
    else:
        records = [run_one(name, seed, args) for name, seed in cases]
    runs: Dict[str, Dict] = {}
    for name in args.models:
        per_seed = [r for (n, _), r in zip(cases, records) if n == name]
        runs[name] = {"opts": MODELS[name], "seeds": per_seed, "top1": summary([r["top1"] for r in per_seed])}
        for key in ("share_a_to_b", "share_b_to_a"):
            shares = [100 * r["attention"][key] for r in per_seed if "attention" in r]
            if shares:
                runs[name][key] = summary(shares)
    top1 = {name: [r["top1"] for r in entry["seeds"]] for name, entry in runs.items()}
    for name, entry in runs.items():
        for ref in ("C2D", "+NL"):
            if ref in top1:
                entry[f"vs_{ref.lstrip('+')}"] = paired(top1[name], top1[ref])
    return {"spec": task_spec(args).__dict__, "steps": args.steps, "batch": args.batch, "width": args.width,
            "test_clips": args.test, "seeds": args.seeds, "models": runs}


def _difference(d: Optional[Dict]) -> str:
    return "—" if d is None else f"{d['mean']:+.1f} ± {d['ci95']:.1f}{' *' if d['exceeds_spread'] else ''}"


def table(result: Dict) -> str:
    chance = 100 / (result["spec"]["num_frames"] * result["spec"]["grid"] ** 2)
    rows = []
    for name, entry in result["models"].items():
        t = entry["top1"]
        shares = [entry.get(key) for key in ("share_a_to_b", "share_b_to_a")]
        rows.append([name, f"{t['mean']:.1f} ± {t['std']:.1f}", " ".join(f"{r['top1']:.1f}" for r in entry["seeds"]),
                     *(_difference(entry.get(key)) for key in ("vs_C2D", "vs_NL")),
                     *(f"{x['mean']:.1f} ± {x['std']:.1f}" if x else "—" for x in shares)])
    header = ["model", "top-1 % (mean ± std)", "per seed", "vs C2D", "vs NL", "map A→B %", "map B→A %"]
    return (common.markdown_table(header, rows) + "\n\nDifferences: paired by seed, mean ± 95 % t half-width; "
            f"* = the interval excludes 0. Map shares: chance {chance:.1f} % (one cell of the block's grid).")


def main() -> int:
    parser = common.parser(__doc__, "claim", repeats=None, device=False,
                           quick="CI smoke run: 2 seeds, 3 steps of 4 clips, 16 test clips")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (CPU)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=400, help="SGD steps per run")
    parser.add_argument("--batch", type=int, default=32, help="clips per step (new clips every step)")
    parser.add_argument("--width", type=int, default=8, help="RESNET.WIDTH_PER_GROUP")
    parser.add_argument("--test", type=int, default=512, help="test clips per seed")
    parser.add_argument("--attention-clips", type=int, default=64, help="test clips of the attention check")
    parser.add_argument("--frames", type=int, default=2, help="frames per clip")
    parser.add_argument("--gap", type=int, default=1, help="frames between A and B")
    parser.add_argument("--distractors", type=int, default=2)
    parser.add_argument("--min-distance", type=float, default=0.0, help="grid cells between A and B")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time, in separate processes")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of %(default)s")
    args = parser.parse_args()
    args.models = args.models.split(",")
    unknown = sorted(set(args.models) - set(MODELS))
    if unknown:
        parser.error(f"--models: unknown {unknown}; choose from {list(MODELS)}")
    if args.quick:
        args.seeds, args.steps, args.batch, args.test, args.attention_clips = 2, 3, 4, 16, 2
    device = common.start(args)
    task_spec(args).check()
    start = time.perf_counter()
    result = run(args)
    result["wall_s"] = round(time.perf_counter() - start, 1)
    return common.report(args, device, result, table(result) + f"\n\nwall time {result['wall_s']} s")


if __name__ == "__main__":
    sys.exit(main())
