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
