"""Encoder throughput: clay-search's encoder against the reference claymodel 1.5.0 encoder.

Same weights, same inputs, same process; 256 px chips, patch 8 (1,024 patches), the 10
Sentinel-2 bands Clay uses. Prints the machine (CPU model and flags, torch threads, measured
fp32/bf16 GEMM peaks), then per size: chips/s of the reference (fp32), our fp32, our automatic
choice (``precision="auto"``, decided by calibration and cached) and the opt-in int8, the ratios
to the reference, the smallest CLS cosine to the reference fp32 output, and the achieved GFLOP/s
(analytic FLOPs per chip) as a share of the best measured GEMM peak.

    .venv/bin/python bench/model_throughput.py [--sizes tiny base] [--repeats 3] [--threads N]

Needs the reference (``make reference``). Timings are wall clock, best of ``--repeats``
interleaved passes, so background load hits every contender alike.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reference_clay import reference_encoder, reference_forward

from clay_search.model import ClayEncoder, Embedder, SensorRegistry, get_config
from clay_search.model.calibration import cpu_flags, cpu_model, gemm_gflops

BATCH = {"nano": 8, "tiny": 8, "small": 4, "base": 2, "large": 1}
FLAGS_SHOWN = (
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512_bf16",
    "avx512_fp16",
    "amx_bf16",
    "amx_int8",
    "amx_fp16",
    "avx_vnni",
    "avx512_vnni",
)


def encoder_gflop(cfg, chip: int, bands: int) -> float:
    """Analytic GFLOP per chip of the encoder (multiply-add = 2 FLOP): matmuls and attention."""
    length = (chip // cfg.patch_size) ** 2
    n, d = length + 1, cfg.dim
    inner, mlp = cfg.heads * cfg.dim_head, int(cfg.dim * cfg.mlp_ratio)
    patch = 2 * length * bands * cfg.patch_size**2 * d
    block = 2 * n * d * 3 * inner + 2 * n * inner * d + 4 * n * n * inner + 4 * n * d * mlp
    return (patch + cfg.depth * block) / 1e9


def peak(precision: str, n: int = 2048, clock=time.perf_counter) -> tuple[float, int]:
    """Best GEMM GFLOP/s at ``n`` (falls back to 512 where ``n`` would take minutes)."""
    small = gemm_gflops(precision, 512, repeats=2, clock=clock)
    if 2 * n**3 / (small * 1e9) > 3.0:
        return small, 512
    return gemm_gflops(precision, n, repeats=3, clock=clock), n


CLOCK = time.perf_counter


def _time(fn) -> float:
    t0 = CLOCK()
    fn()
    return CLOCK() - t0


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1).min().item()


def bench(size: str, repeats: int, chip: int = 256, int8: bool = True) -> dict:
    """Measure one size; returns the figures as a dict."""
    cfg = get_config(size)
    torch.manual_seed(0)
    ref = reference_encoder(
        dim=cfg.dim,
        depth=cfg.depth,
        heads=cfg.heads,
        dim_head=cfg.dim_head,
        mlp_ratio=cfg.mlp_ratio,
        patch_size=cfg.patch_size,
    )
    ours = ClayEncoder.from_config(cfg).eval()
    ours.load_state_dict(ref.state_dict())
    s2 = SensorRegistry.default().get("sentinel-2-l2a")
    bands = [b for b in s2.bands if b.has_stats]  # the 10 bands Clay uses
    waves = torch.tensor([b.wavelength for b in bands])
    b = BATCH[size]
    g = torch.Generator().manual_seed(1)
    pixels = torch.randn(b, len(bands), chip, chip, generator=g)
    t = torch.rand(b, 4, generator=g) * 2 - 1
    ll = torch.rand(b, 4, generator=g) * 2 - 1
    embedders = {"ours_fp32": Embedder(ours, precision="fp32")}
    auto = Embedder(ours, precision="auto")
    t0 = time.perf_counter()
    auto.resolve_precision(chip_size=chip, bands=len(bands))
    calib_s = time.perf_counter() - t0
    if auto.precision != "fp32":
        embedders["ours_auto"] = auto
    if int8:
        embedders["ours_int8"] = Embedder(ours, precision="int8")

    def run_ref():
        with torch.inference_mode():
            return reference_forward(ref, pixels, t, ll, s2.gsd, waves)

    def runner(emb: Embedder):
        def run():
            weights = emb.patch_weights(waves)
            with torch.inference_mode():
                return emb.runner(
                    pixels.to(emb.dtype),
                    time=t.to(emb.dtype),
                    latlon=ll.to(emb.dtype),
                    gsd=s2.gsd,
                    waves=waves,
                    patch_weights=weights,
                )

        return run

    fns = {"reference": run_ref, **{k: runner(e) for k, e in embedders.items()}}
    outs = {k: fn() for k, fn in fns.items()}  # also the warm-up
    secs: dict[str, float] = {}
    for _ in range(max(1, repeats)):  # interleaved: background load hits every contender alike
        for name, fn in fns.items():
            secs[name] = min(secs.get(name, float("inf")), _time(fn))
    cps = {k: b / v for k, v in secs.items()}
    if "ours_auto" not in cps:  # auto chose fp32: the same runner
        cps["ours_auto"], outs["ours_auto"] = cps["ours_fp32"], outs["ours_fp32"]
    gflop = encoder_gflop(cfg, chip, len(bands))
    return {
        "size": size,
        "batch": b,
        "gflop_per_chip": gflop,
        "chips_per_s": cps,
        "ratio": {k: v / cps["reference"] for k, v in cps.items()},
        "gflops": {k: v * gflop for k, v in cps.items()},
        "cos": {k: _cos(v[:, 0], outs["reference"][:, 0]) for k, v in outs.items()},
        "maxdiff_fp32": (outs["ours_fp32"] - outs["reference"]).abs().max().item(),
        "auto": auto.precision,
        "auto_summary": auto.calibration.summary() if auto.calibration else "",
        "calibration_s": calib_s,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["tiny", "base"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    ap.add_argument("--no-int8", action="store_true", help="skip the opt-in int8 contender")
    ap.add_argument(
        "--cpu-time",
        action="store_true",
        help="one thread, timed by this thread's CPU time: figures that other processes on a "
        "shared machine do not distort (per-core speed, not the machine's)",
    )
    args = ap.parse_args()
    threads = torch.get_num_threads()
    global CLOCK
    if args.cpu_time:
        args.threads, CLOCK = 1, time.thread_time
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        flags = set(cpu_flags())
        print(
            f"CPU: {cpu_model()} ({os.cpu_count()} logical CPUs); flags: "
            f"{' '.join(f for f in FLAGS_SHOWN if f in flags) or 'n/a'}"
        )
        print(
            f"torch {torch.__version__}, threads {torch.get_num_threads()}, clock "
            f"{'thread CPU time' if args.cpu_time else 'wall'}, "
            f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}"
        )
        peaks = {p: peak(p, clock=CLOCK) for p in ("fp32", "bf16")}
        best_peak = max(v for v, _ in peaks.values())
        print(
            "GEMM peaks: "
            + ", ".join(f"{p} {v:.1f} GFLOP/s (n={n})" for p, (v, n) in peaks.items())
        )
        cols = ("reference", "ours_fp32", "ours_auto", "ours_int8")
        print(
            "size  batch GFLOP/chip | chips/s: "
            + " ".join(f"{c:>10s}" for c in cols)
            + " | ratio vs ref: fp32 auto int8 | cos: fp32 auto int8 | % of peak: ref fp32 "
            "auto int8"
        )
        for size in args.sizes:
            r = bench(size, args.repeats, int8=not args.no_int8)
            c, q, cos = r["chips_per_s"], r["ratio"], r["cos"]
            share = {k: 100 * v / best_peak for k, v in r["gflops"].items()}
            get = lambda d, k, f: f.format(d[k]) if k in d else "-"  # noqa: E731
            print(
                f"{size:5s} {r['batch']:5d} {r['gflop_per_chip']:10.2f} | chips/s: "
                + " ".join(f"{get(c, k, '{:.2f}'):>10s}" for k in cols)
                + " | "
                + " ".join(get(q, k, "{:.2f}x") for k in cols[1:])
                + " | "
                + " ".join(get(cos, k, "{:.6f}") for k in cols[1:])
                + " | "
                + " ".join(get(share, k, "{:.0f}%") for k in cols)
            )
            print(
                f"      auto = {r['auto']} (calibration {r['calibration_s']:.2f} s: "
                f"{r['auto_summary']}); max|diff| fp32 vs reference {r['maxdiff_fp32']:.2e}"
            )
            sys.stdout.flush()
        print(f"load average at the end {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    main()
