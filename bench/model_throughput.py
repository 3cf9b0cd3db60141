"""Encoder throughput: clay-search's encoder against the reference claymodel 1.5.0 encoder.

Same weights, same inputs, same process; 256 px chips, patch 8, 10 bands (Sentinel-2 L2A).
Prints chips/s, the speed ratio and the cosine similarity of the CLS embeddings for our fp32 path
and our fast path (cached patch weights + a bf16 copy of the weights where the CPU has native
bf16). The reference under bf16 autocast is timed too, to show what the fast path adds beyond
autocast.

    .venv/bin/python bench/model_throughput.py [--sizes tiny base] [--repeats 3]

Needs the reference (``make reference``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reference_clay import reference_encoder, reference_forward  # noqa: E402

from clay_search.model import ClayEncoder, Embedder, SensorRegistry, get_config  # noqa: E402
from clay_search.model.embedder import cpu_supports_bf16  # noqa: E402

BATCH = {"nano": 8, "tiny": 8, "small": 4, "base": 2, "large": 1}


def _time(fn, repeats: int) -> float:
    """Best-of-``repeats`` wall time of ``fn()`` in seconds (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1).min().item()


def bench(size: str, repeats: int, chip: int = 256) -> dict:
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
    fp32 = Embedder(ours, precision="fp32")
    fast = Embedder(ours, precision="auto")

    def run_ref():
        with torch.inference_mode():
            return reference_forward(ref, pixels, t, ll, s2.gsd, waves)

    def run_ref_bf16():
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return reference_forward(ref, pixels, t, ll, s2.gsd, waves)

    def run(emb: Embedder):
        weights = emb.patch_weights(waves)
        with torch.inference_mode():
            return emb._runner(
                pixels.to(emb.dtype),
                time=t.to(emb.dtype),
                latlon=ll.to(emb.dtype),
                gsd=s2.gsd,
                waves=waves,
                patch_weights=weights,
            )

    out_ref, out_fp32, out_fast = run_ref(), run(fp32), run(fast)
    out_ref_bf16 = run_ref_bf16()
    secs = {}
    # interleave the contenders so background load hits them alike
    for _ in range(max(1, repeats)):
        for name, fn in (
            ("reference", run_ref),
            ("ours_fp32", lambda: run(fp32)),
            ("ours_fast", lambda: run(fast)),
            ("reference_bf16", run_ref_bf16),
        ):
            secs.setdefault(name, []).append(_time(fn, 1))
    best = {k: min(v) for k, v in secs.items()}
    cps = {k: b / v for k, v in best.items()}
    return {
        "size": size,
        "batch": b,
        "chips_per_s": cps,
        "ratio_fp32": cps["ours_fp32"] / cps["reference"],
        "ratio_fast": cps["ours_fast"] / cps["reference"],
        "ratio_fast_vs_ref_bf16": cps["ours_fast"] / cps["reference_bf16"],
        "cos_fp32": _cos(out_fp32[:, 0], out_ref[:, 0]),
        "cos_fast": _cos(out_fast[:, 0], out_ref[:, 0]),
        "cos_fast_tokens": _cos(out_fast, out_ref),
        "cos_ref_bf16": _cos(out_ref_bf16[:, 0], out_ref[:, 0]),
        "maxdiff_fp32": (out_fp32 - out_ref).abs().max().item(),
        "fast_precision": fast.precision,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["tiny", "base"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"native bf16: {cpu_supports_bf16()}"
    )
    print("size  batch  ref chips/s  ours fp32  ours fast  fp32 ratio  fast ratio  "
          "cos fp32   cos fast  (fast vs ref under bf16 autocast)")
    for size in args.sizes:
        r = bench(size, args.repeats)
        c = r["chips_per_s"]
        print(
            f"{size:5s} {r['batch']:5d} {c['reference']:12.2f} {c['ours_fp32']:10.2f} "
            f"{c['ours_fast']:10.2f} {r['ratio_fp32']:10.2f}x {r['ratio_fast']:10.2f}x "
            f"{r['cos_fp32']:9.6f} {r['cos_fast']:9.6f}  ({r['ratio_fast_vs_ref_bf16']:.2f}x; "
            f"ref bf16 {c['reference_bf16']:.2f} chips/s, cos {r['cos_ref_bf16']:.6f}) "
            f"max|diff| fp32 {r['maxdiff_fp32']:.2e}, "
            f"fast={r['fast_precision']}"
        )
        sys.stdout.flush()


if __name__ == "__main__":
    main()
