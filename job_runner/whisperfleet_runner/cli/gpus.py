"""`whisperfleet gpus`: the GPUs NVML sees, and whether each passes --min-free-memory."""

from __future__ import annotations

import json
from typing import Any

import click

from whisperfleet_runner.gpu import choice as gpu_choice
from whisperfleet_runner.gpu import nvml


def _size(_ctx: click.Context, _param: click.Parameter, value: str) -> int:
    try:
        return gpu_choice.parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


@click.command("gpus")
@click.option("--min-free-memory", "min_free_mib", default="0", callback=_size,
              metavar="SIZE", help="Mark GPUs with less free memory as busy (e.g. 4GiB).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def gpus_command(min_free_mib: int, as_json: bool) -> None:
    """List the GPUs NVML sees (index = nvidia-smi index, as --gpus expects)."""
    try:
        found = nvml.list_gpus()
    except nvml.NvmlUnavailable as exc:
        # No GPU is a normal state for this command (CPU machines), not an error.
        if as_json:
            click.echo("[]")
        click.echo(f"No NVIDIA GPU: {exc}", err=as_json)
        return
    if as_json:
        rows = [_json_row(g, min_free_mib) for g in found]
        click.echo(json.dumps(rows, indent=2))
        return
    if not found:
        click.echo("NVML is working but sees no GPU.")
        return
    _print_table(found, min_free_mib)


def _passes(gpu: nvml.GpuInfo, min_free_mib: int) -> bool:
    return gpu.memory_free_mib >= min_free_mib


def _json_row(gpu: nvml.GpuInfo, min_free_mib: int) -> dict[str, Any]:
    return {**gpu.to_dict(), "label": gpu.label, "passes_min_free": _passes(gpu, min_free_mib)}


def _print_table(found: list[nvml.GpuInfo], min_free_mib: int) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:  # piped: never cut UUIDs to fit an assumed 80 columns
        console = Console(width=max(console.width, 200))
    table = Table(title=f"GPUs (min free memory {min_free_mib} MiB)")
    for column in ("index", "UUID", "name", "memory used/total", "util", "cc", "procs", "usable"):
        table.add_column(column, no_wrap=column in ("UUID", "index"))
    for gpu in found:
        free_ok = _passes(gpu, min_free_mib)
        table.add_row(
            gpu.label,
            gpu.uuid,
            gpu.name,
            f"{gpu.memory_used_mib}/{gpu.memory_total_mib} MiB",
            "n/a" if gpu.utilization_percent is None else f"{gpu.utilization_percent}%",
            gpu.compute_capability or "?",
            "n/a" if gpu.process_count is None else str(gpu.process_count),
            "yes" if free_ok else f"busy ({gpu.memory_free_mib} MiB free)",
        )
    console.print(table)
