"""Choose the encoder's precision by measuring it on the device at hand, and remember the choice.

``precision="auto"`` is decided here, never from CPU flags: a CPU may list ``avx512_bf16`` and
still run bf16 matrix products at half its fp32 speed, and one without any bf16 instructions runs
them hundreds of times slower. The calibration:

1. probes each candidate's matrix-product speed with one small GEMM of the model's width (a
   candidate several times slower than fp32 is dropped at once, without running the model);
2. runs the real encoder (patch embedding and the first blocks, at the real chip size and band
   count, one chip) in each remaining candidate, interleaved, best of a few runs, within a time
   budget of well under a second;
3. keeps candidates whose tokens stay within ``min_cosine`` of fp32 and picks the fastest, if it
   beats fp32 by a clear margin (else fp32: never slower than our own fp32).

The result is cached per machine (CPU or GPU model, torch version, thread count), model and chip
size in ``cache_dir("calibration")`` (see :mod:`clay_search.paths`), so a machine measures once.
Candidates: CPU ``fp32``, ``bf16``, ``fp16``; CUDA ``fp32``, ``tf32`` (fp32 weights, TF32
matrix products), ``bf16``, ``fp16``. ``int8`` (dynamically quantised linear layers, CPU) is
never chosen automatically: it is an opt-in.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import platform
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from clay_search.errors import PrecisionUnavailableError
from clay_search.paths import cache_dir

if TYPE_CHECKING:
    from clay_search.model.clay import ClayEncoder

log = logging.getLogger(__name__)

#: Every precision an Embedder runs in; ``auto`` chooses among :data:`CANDIDATES`.
PRECISIONS = ("fp32", "bf16", "fp16", "tf32", "int8")
#: What ``auto`` measures, per device type.
CANDIDATES = {"cpu": ("fp32", "bf16", "fp16"), "cuda": ("fp32", "tf32", "bf16", "fp16")}
DTYPES = {
    "fp32": torch.float32,
    "tf32": torch.float32,
    "int8": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}
#: Version of the calibration procedure; part of the cache key.
VERSION = 1


# -- running a precision ---------------------------------------------------------------------------
def check_precision(precision: str, device: torch.device) -> None:
    """Raise :class:`PrecisionUnavailableError` for a precision this device cannot run."""
    if precision not in PRECISIONS:
        raise PrecisionUnavailableError(
            f"unknown precision {precision!r}; choose auto or one of {', '.join(PRECISIONS)}"
        )
    if precision == "tf32" and device.type != "cuda":
        raise PrecisionUnavailableError("tf32 needs a CUDA GPU; on the CPU use fp32 (or auto)")
    if precision == "int8" and device.type != "cpu":
        raise PrecisionUnavailableError(
            "int8 runs on the CPU only; on a GPU use auto, bf16 or fp16"
        )
    if precision == "int8" and not torch.backends.quantized.supported_engines:
        raise PrecisionUnavailableError("this torch build has no int8 engine; use fp32 or auto")


def make_runner(encoder: ClayEncoder, precision: str) -> ClayEncoder:
    """The module that runs the encoder in ``precision`` (the encoder itself for fp32/tf32).

    bf16/fp16: a copy with weights in that type (no per-call casts, unlike autocast).
    int8: a copy whose transformer linear layers are dynamically quantised (int8 weights,
    activations quantised per batch); everything else stays fp32.
    """
    if precision in {"fp32", "tf32"}:
        return encoder
    runner = copy.deepcopy(encoder)
    if precision == "int8":
        from torch.ao.quantization import quantize_dynamic

        with warnings.catch_warnings():  # torch.ao.quantization deprecation notices
            warnings.simplefilter("ignore")
            runner.transformer = quantize_dynamic(
                runner.transformer, {nn.Linear}, dtype=torch.qint8
            )
        return runner.eval()
    return runner.to(DTYPES[precision]).eval()


@contextlib.contextmanager
def precision_context(precision: str, device: torch.device) -> Iterator[None]:
    """Settings a precision needs while it runs (TF32 matmuls for ``tf32``), restored after."""
    if precision != "tf32" or device.type != "cuda":
        yield
        return
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- machine facts ---------------------------------------------------------------------------------
def cpu_model() -> str:
    """The CPU's model string (``model name`` in /proc/cpuinfo, else the platform's answer)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo is not available). For reports only."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line.split(":", 1)[1].split()
    except OSError:
        pass
    return []


def machine_key(device: torch.device | str = "cpu") -> dict[str, Any]:
    """What identifies a machine for the cache: device model, torch version, threads."""
    device = torch.device(device)
    key: dict[str, Any] = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    if device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        key.update(
            device="cuda",
            gpu=torch.cuda.get_device_name(idx),
            capability=list(torch.cuda.get_device_capability(idx)),
            cuda=torch.version.cuda,
        )
    else:
        flags = " ".join(sorted(cpu_flags()))
        key.update(
            device=device.type,
            cpu=cpu_model(),
            flags=hashlib.sha256(flags.encode()).hexdigest()[:12],
        )
    return key


# -- measurements ----------------------------------------------------------------------------------
def gemm_gflops(
    precision: str,
    n: int,
    *,
    device: torch.device | str = "cpu",
    k: int | None = None,
    repeats: int = 3,
    max_seconds: float = 2.0,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Measured GFLOP/s of one ``[n, k] @ [k, n]`` product in ``precision`` (best of ``repeats``).

    One untimed warm-up call first; a timed call that exceeds ``max_seconds`` ends the
    measurement early. ``clock``: wall time by default (``time.thread_time`` counts only this
    thread's CPU time, which other processes on the machine do not inflate).
    """
    device = torch.device(device)
    k = k or n
    dtype = DTYPES[precision]
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, k, generator=g).to(device, dtype)
    b = torch.randn(k, n, generator=g).to(device, dtype)
    with precision_context(precision, device), torch.inference_mode():
        a @ b
        best = float("inf")
        for _ in range(repeats):
            _sync(device)
            t0 = clock()
            a @ b
            _sync(device)
            dt = clock() - t0
            best = min(best, dt)
            if dt > max_seconds:
                break
    return 2 * n * n * k / max(best, 1e-9) / 1e9


@contextlib.contextmanager
def _one_thread(device: torch.device) -> Iterator[Callable[[], float]]:
    """The clock to calibrate with: this thread's CPU time on one intra-op thread (CPU), restored
    after; wall time with synchronisation on a GPU.

    On a CPU the precisions differ by their kernels' speed per core, which one thread measures;
    its CPU time is not inflated by other processes on a shared machine, unlike wall time with
    several threads (a descheduled thread stalls every parallel region).
    """
    if device.type != "cpu":
        yield time.perf_counter
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield time.thread_time
    finally:
        torch.set_num_threads(threads)


def gemm_choice(
    device: torch.device | str = "cpu",
    candidates: tuple[str, ...] = ("fp32", "bf16"),
    *,
    n: int = 256,
    margin: float = 1.1,
) -> str:
    """The candidate whose matrix products run fastest here (GEMM probe only; fp32 unless one
    beats it by ``margin``). For mixed-precision training, where the model is not fixed yet."""
    device = torch.device(device)
    with _one_thread(device) as clock:
        speed: dict[str, float] = {}
        for name in candidates:
            try:
                speed[name] = gemm_gflops(name, n, device=device, max_seconds=0.05, clock=clock)
            except Exception:  # noqa: BLE001 - a dtype this build cannot multiply
                continue
    base = speed.get("fp32", 0.0)
    best = max(speed, key=speed.__getitem__, default="fp32")
    return best if speed.get(best, 0.0) >= margin * base else "fp32"


@dataclass
class Calibration:
    """The outcome of a calibration: the choice and what it was based on.

    ``candidates[p]``: ``gemm_gflops`` (the probe), ``seconds`` (best time of the model slice,
    one chip), ``speedup`` (fp32 seconds / seconds), ``cosine`` (smallest token cosine to fp32),
    ``rejected`` (why it was not eligible, or ``None``).
    """

    precision: str
    device: str
    candidates: dict[str, dict[str, Any]]
    blocks: int
    depth: int
    chip_size: int
    bands: int
    key: dict[str, Any]
    model: str
    measured_at: str
    wall_s: float
    cached: bool = False
    path: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    def summary(self) -> str:
        """One line: the choice and each candidate's figures."""
        parts = []
        for name, c in self.candidates.items():
            if c.get("rejected") and c.get("speedup") is None:
                parts.append(f"{name}: {c['rejected']}")
                continue
            bits = [f"{c['speedup']:.2f}x fp32"] if c.get("speedup") is not None else []
            if c.get("cosine") is not None:
                bits.append(f"cos {c['cosine']:.6f}")
            if c.get("rejected"):
                bits.append(c["rejected"])
            parts.append(f"{name}: {', '.join(bits)}")
        src = "cached" if self.cached else f"measured in {self.wall_s:.2f} s"
        return f"{self.precision} ({src}; {'; '.join(parts)})"


def decide(
    candidates: dict[str, dict[str, Any]], *, min_cosine: float = 0.999, margin: float = 1.1
) -> str:
    """The precision to use from measured figures (see :class:`Calibration`).

    The fastest candidate that was not rejected and keeps ``cosine >= min_cosine``, if it is at
    least ``margin`` times faster than fp32 (measurements are noisy: a near tie keeps fp32).
    """
    best, best_speed = "fp32", 1.0
    for name, c in candidates.items():
        if name == "fp32" or c.get("rejected") or c.get("speedup") is None:
            continue
        if c.get("cosine") is None or c["cosine"] < min_cosine:
            continue
        if c["speedup"] >= margin * 1.0 and c["speedup"] > best_speed:
            best, best_speed = name, c["speedup"]
    return best


#: A measurement: ``(encoder, device, chip_size, bands, candidates, budget_s) -> (figures,
#: blocks used)``. Replaceable for tests.
Measure = Callable[..., tuple[dict[str, dict[str, Any]], int]]


def _min_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    cos = torch.nn.functional.cosine_similarity(a.float().flatten(0, -2), b.float().flatten(0, -2))
    return float(cos.min())


def measure_encoder(
    encoder: ClayEncoder,
    *,
    device: torch.device,
    chip_size: int,
    bands: int,
    candidates: tuple[str, ...],
    budget_s: float = 0.6,
    probe_ratio: float = 3.0,
) -> tuple[dict[str, dict[str, Any]], int]:
    """Time the encoder's first blocks on one seeded chip in each candidate precision.

    On a CPU on one thread, by CPU time (see :func:`_one_thread`). Returns per-candidate
    figures (see :class:`Calibration`) and the number of blocks run.
    """
    with _one_thread(device) as clock:
        return _measure(encoder, device, chip_size, bands, candidates, budget_s, probe_ratio, clock)


def _measure(encoder, device, chip_size, bands, candidates, budget_s, probe_ratio, clock):
    figures: dict[str, dict[str, Any]] = {}
    dim = encoder.dim
    # 1. GEMM probe: [256, D] x [D, 256] (cheap even where a dtype has no fast path)
    for name in candidates:
        try:
            flops = gemm_gflops(name, 256, k=dim, device=device, max_seconds=0.05, clock=clock)
            figures[name] = {"gemm_gflops": round(flops, 2), "rejected": None}
        except Exception as e:  # noqa: BLE001 - a dtype this build cannot multiply
            figures[name] = {"gemm_gflops": None, "rejected": f"matrix product failed: {e}"}
    base = figures["fp32"]["gemm_gflops"] or 0.0
    for name, f in figures.items():
        if name != "fp32" and not f["rejected"] and (f["gemm_gflops"] or 0) * probe_ratio < base:
            f["rejected"] = (
                f"matrix products {f['gemm_gflops']:.1f} GFLOP/s vs fp32 {base:.1f} "
                "(one thread): no fast path on this device"
            )
    live = [n for n in candidates if not figures[n]["rejected"]]
    if live == ["fp32"]:  # nothing left to compare: no model run needed
        figures["fp32"].update(seconds=None, speedup=1.0, cosine=1.0)
        return figures, 0
    # 2. the real model, one chip at the real size, interleaved, best of `reps`
    g = torch.Generator(device="cpu").manual_seed(0)
    pixels = torch.randn(1, bands, chip_size, chip_size, generator=g)
    waves = torch.linspace(0.45, 2.2, bands)
    meta = torch.zeros(1, 4)
    with torch.inference_mode():
        weight, bias = encoder.patch_embedding.generate(waves.to(device))
    runners: dict[str, ClayEncoder] = {}
    for name in live:
        try:
            runners[name] = make_runner(encoder, name)
        except Exception as e:  # noqa: BLE001
            figures[name]["rejected"] = f"could not build: {e}"
    depth = len(encoder.blocks)
    n_blocks = 1

    def run(name: str) -> tuple[float, torch.Tensor]:
        r, dt = runners[name], DTYPES[name]
        with precision_context(name, device), torch.inference_mode():
            _sync(device)
            t0 = clock()
            x = r.prepare_tokens(
                pixels.to(device, dt),
                time=meta.to(device, dt),
                latlon=meta.to(device, dt),
                gsd=10.0,
                waves=waves,
                patch_weights=(weight.to(dt), None if bias is None else bias.to(dt)),
            )
            for block in r.blocks[:n_blocks]:
                x = block(x)
            _sync(device)
            return clock() - t0, x

    # size the slice from one fp32 block so that every candidate fits in the budget
    first, _ = run("fp32")  # also the warm-up
    reps = 2
    per_run = budget_s / max(1, len(runners)) / (reps + 1)
    n_blocks = max(1, min(depth, int(per_run / max(first, 1e-6))))
    outs: dict[str, torch.Tensor] = {}
    secs: dict[str, float] = {}
    for rep in range(reps + 1):
        for name in list(runners):
            try:
                dt, out = run(name)
            except Exception as e:  # noqa: BLE001 - an op without this dtype's kernel
                figures[name]["rejected"] = f"failed to run: {e}"
                runners.pop(name)
                continue
            if rep:
                secs[name] = min(secs.get(name, float("inf")), dt)
            else:
                outs[name] = out
    for name, s in secs.items():
        figures[name]["seconds"] = s
        figures[name]["speedup"] = secs["fp32"] / s
        figures[name]["cosine"] = 1.0 if name == "fp32" else _min_cosine(outs[name], outs["fp32"])
    return figures, n_blocks


# -- the cache -------------------------------------------------------------------------------------
def _cache_path(key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return cache_dir("calibration") / f"{digest}.json"


def cached_calibrations(device: torch.device | str | None = None) -> list[Calibration]:
    """Calibrations cached for this machine (all models and chip sizes); reads only."""
    folder = cache_dir("calibration")
    machine = machine_key(device or "cpu")
    found = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            cal = Calibration.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            continue
        if all(cal.key.get(k) == v for k, v in machine.items()):
            cal.cached, cal.path = True, str(path)
            found.append(cal)
    return found


def calibrate(
    encoder: ClayEncoder,
    *,
    model: str,
    device: torch.device | str = "cpu",
    chip_size: int = 256,
    bands: int = 10,
    candidates: tuple[str, ...] | None = None,
    use_cache: bool = True,
    budget_s: float = 0.6,
    min_cosine: float = 0.999,
    measure: Measure | None = None,
) -> Calibration:
    """Choose a precision for ``encoder`` on ``device`` (cached; see the module docstring).

    ``model`` names the weights (an Embedder's ``model_id``); the encoder's sizes are added to
    the cache key. ``measure`` replaces :func:`measure_encoder` (tests).
    """
    device = torch.device(device)
    candidates = candidates or CANDIDATES.get(device.type, ("fp32",))
    arch = f"d{encoder.dim}x{len(encoder.blocks)}p{encoder.patch_size}"
    key = {
        **machine_key(device),
        "model": model,
        "arch": arch,
        "chip_size": chip_size,
        "bands": bands,
        "candidates": list(candidates),
        "min_cosine": min_cosine,
        "version": VERSION,
    }
    path = _cache_path(key)
    if use_cache and path.is_file():
        try:
            cal = Calibration.from_dict(json.loads(path.read_text()))
            if cal.key == key:
                cal.cached, cal.path = True, str(path)
                return cal
        except (OSError, ValueError, TypeError):
            log.warning("ignoring an unreadable calibration cache file %s", path)
    t0 = time.perf_counter()
    if len(candidates) == 1:
        figures, blocks = {candidates[0]: {"rejected": None}}, 0
    else:
        figures, blocks = (measure or measure_encoder)(
            encoder,
            device=device,
            chip_size=chip_size,
            bands=bands,
            candidates=candidates,
            budget_s=budget_s,
        )
    cal = Calibration(
        precision=decide(figures, min_cosine=min_cosine),
        device=str(device),
        candidates=figures,
        blocks=blocks,
        depth=len(encoder.blocks),
        chip_size=chip_size,
        bands=bands,
        key=key,
        model=model,
        measured_at=datetime.now(UTC).isoformat(timespec="seconds"),
        wall_s=round(time.perf_counter() - t0, 3),
    )
    _write(path, cal)
    return cal


def _write(path: Path, cal: Calibration) -> None:
    """Store a calibration (atomically); a cache that cannot be written is only logged."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cal.to_dict(), indent=2))
        os.replace(tmp, path)
        cal.path = str(path)
    except OSError as e:
        log.warning("could not cache the precision calibration in %s: %s", path, e)
