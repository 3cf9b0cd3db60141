"""``clay-search info``: sensors known to the model and the bundled weights."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from clay_search.cli.options import VerboseOpt, WeightsOpt, handle_errors


def register(app: typer.Typer) -> None:
    """Add the command to ``app``."""
    app.command("info")(info)


@handle_errors
def info(
    name: Annotated[
        str | None, typer.Argument(help="A sensor name: show its bands (same as --sensor).")
    ] = None,
    weights: WeightsOpt = None,
    sensor: Annotated[str | None, typer.Option(help="Show one sensor's bands.")] = None,
    calibrate: Annotated[
        int | None,
        typer.Option(
            help="Measure precision=auto now for these weights at this chip size (px); "
            "without it, the choices already measured on this machine are shown."
        ),
    ] = None,
    verbose: VerboseOpt = False,
) -> None:
    """List sensors (or one sensor's bands) and describe the model weights.

    Chips of a store are listed by `clay-search chips --store PATH`.
    """
    from clay_search.model import SensorRegistry, load_encoder

    if name and sensor and name != sensor:
        raise typer.BadParameter(f"give one sensor, not {name!r} and --sensor {sensor!r}")
    sensor = sensor or name
    console = Console()
    reg = SensorRegistry.default()
    if sensor:
        s = reg.get(sensor)
        t = Table(title=f"{s.name} (GSD {s.gsd} m)")
        for col in ("band", "id", "wavelength (um)", "mean", "std"):
            t.add_column(col)
        for b in s.bands:
            t.add_row(b.name, b.id or "", f"{b.wavelength}", f"{b.mean}", f"{b.std}")
        console.print(t)
        return
    t = Table(title="sensors")
    for col in ("sensor", "GSD (m)", "bands"):
        t.add_column(col)
    for name in reg.names:
        s = reg.get(name)
        t.add_row(name, f"{s.gsd}", ", ".join(s.band_names))
    console.print(t)
    _, winfo = load_encoder(weights)
    console.print(f"weights: {winfo.path}\nmodel id: {winfo.model_id}\nconfig: {winfo.config}")
    _precision(console, weights, calibrate)


def _precision(console: Console, weights, chip_size: int | None) -> None:
    """precision=auto on this machine: the cached calibrations, or a new one (``--calibrate``)."""
    import torch

    from clay_search.model import Embedder
    from clay_search.model.calibration import cached_calibrations, cpu_model

    console.print(
        f"machine: {cpu_model()}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    if chip_size:
        emb = Embedder.from_weights(weights)
        emb.resolve_precision(chip_size=chip_size)
        found = [emb.calibration]
    else:
        found = cached_calibrations()
    if not found:
        console.print(
            "precision auto: not measured on this machine yet (measured at the first "
            "ingest, or now with --calibrate 256)"
        )
    for cal in found:
        console.print(
            f"precision auto for {cal.model} at {cal.chip_size} px "
            f"({cal.measured_at}): {cal.summary()}"
        )
