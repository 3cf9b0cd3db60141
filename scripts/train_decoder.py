"""Fit the MAE decoder of the shipped weights (frozen encoder) for the quality score.

The shipped nano weights were saved without their decoder; this fits one to the frozen
encoder on the same training chips (EuroSAT train split, BigEarthNet, Landsat-8, NAIP from
../shared/data) and writes ``model/weights/decoder.safetensors``. The encoder, its model id and
every stored vector are unchanged. Seeded: the same steps write the same file (a
``--max-time-s`` cap makes the step count depend on the machine). The shipped file came from
``--steps 3000 --max-time-s 1300`` on a shared 2-vCPU machine: it stopped at step 2,815 (the
steps done are in the file's metadata).

    .venv/bin/python scripts/train_decoder.py --data ../shared/data --steps 3000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    ap.add_argument("--weights", type=Path, default=None, help="weights folder (default: shipped)")
    ap.add_argument("--out", type=Path, default=None, help="default: <weights>/decoder.safetensors")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-time-s", type=float, default=None)
    args = ap.parse_args(argv)

    from clay_search.cli.train import DEFAULT_SET_WEIGHTS
    from clay_search.ingest.datasets import training_sets
    from clay_search.model.checkpoints import DECODER_FILE, bundled_weights_dir, load_encoder
    from clay_search.model.train import train_decoder

    torch.set_num_threads(args.threads)
    weights = args.weights or bundled_weights_dir()
    encoder, info = load_encoder(weights)
    out = args.out or Path(weights) / DECODER_FILE
    t0 = time.monotonic()
    sets = training_sets(args.data, chip=64)
    print(f"read {sum(len(s) for s in sets)} chips in {time.monotonic() - t0:.0f} s", flush=True)

    def progress(step: int, total: int, loss: float) -> None:
        if step % 100 == 0 or step == total:
            spent = time.monotonic() - t0
            print(f"step {step}/{total} loss {loss:.4f} ({spent:.0f} s)", flush=True)

    res = train_decoder(
        encoder,
        info,
        sets,
        out,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        set_weights=[DEFAULT_SET_WEIGHTS.get(s.name, 0.1) for s in sets],
        max_time_s=args.max_time_s,
        progress=progress,
    )
    print(f"wrote {res.path} after {res.steps_done} steps, {res.wall_s:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
