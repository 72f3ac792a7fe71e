"""What one request costs to render, in one process, without an engine: the front end's unit of work.

    python -m bench.render_cost --model whisper-base --clips 300 [--device cuda]

Builds vLLM's renderer and the Whisper adapter exactly as a front-end worker does (speechlm_batch.frontend),
then renders the same clips (the first Asterisk prompts, decoded before timing) with the decoder prompt as
text (tokenised per clip) and as token ids (TokenPrompts below; not used by the product: it did not pay), features on the CPU and, where a GPU
is present, on it. Prints ms per clip for each variant and checks the variants render the same input.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


class TokenPrompts:
    """Constant decoder prompts given as token ids: the renderer then tokenises nothing per clip.

    The ids are the ones the renderer itself produced for the text prompt (checked on the first request), so
    the engine sees exactly the same input either way.
    """

    def __init__(self, renderer: Renderer) -> None:
        self.renderer = renderer
        self.ids: dict[str, list[int] | None] = {}

    def render(self, request: EngineRequest) -> RenderedRequest:
        text = request.prompt.get("decoder_prompt")
        if not isinstance(text, str):
            return self.renderer.render(request)
        if text not in self.ids:
            rendered = self.renderer.render(request)
            self.ids[text] = self._confirmed(request, rendered)
            return rendered
        ids = self.ids[text]
        if ids is None:
            return self.renderer.render(request)
        prompt = {**request.prompt, "decoder_prompt": {"prompt_token_ids": list(ids)}}
        return self.renderer.render(replace(request, prompt=prompt))

    def _confirmed(self, request: EngineRequest, rendered: RenderedRequest) -> list[int] | None:
        ids = _decoder_ids(rendered.engine_input)
        if ids is None:
            return None
        prompt = {**request.prompt, "decoder_prompt": {"prompt_token_ids": list(ids)}}
        again = self.renderer.render(replace(request, prompt=prompt))
        return ids if _decoder_ids(again.engine_input) == ids else None


def _decoder_ids(engine_input: Any) -> list[int] | None:
    decoder = engine_input.get("decoder_prompt") if isinstance(engine_input, Mapping) else None  # EncoderDecoderInput
    ids = decoder.get("prompt_token_ids") if isinstance(decoder, Mapping) else None
    return list(ids) if ids is not None else None


def transfer_cost(renderer: Any, adapter: Any, pieces: list[Any]) -> dict[str, dict[str, float]]:
    """A rendered row's trip from a worker to the main process: pickling (worker) and unpickling (the main
    process, which also feeds the engine), with torch's own tensor pickling and with the pool's (arrays)."""
    import pickle

    from speechlm_batch import frontend

    rows = [frontend.PreparedRow(None, 1.0, 1, (), (frontend.PreparedPiece(0, len(p.samples), renderer.render(adapter.request(p))),))
            for p in pieces]
    ways = {"torch pickling": (lambda r: pickle.dumps(r, protocol=pickle.HIGHEST_PROTOCOL), pickle.loads),
            "arrays (the pool)": (frontend.dumps, frontend.loads)}
    out = {}
    for name, (dumps, loads) in ways.items():
        start = time.perf_counter()
        payloads = [dumps(r) for r in rows]
        dumps_s = time.perf_counter() - start
        start = time.perf_counter()
        back = [loads(b) for b in payloads]
        loads_s = time.perf_counter() - start
        _same_features(rows[0], back[0])
        out[name] = {"dumps_ms": 1000 * dumps_s / len(rows), "loads_ms": 1000 * loads_s / len(rows),
                     "kib_per_clip": sum(map(len, payloads)) / len(rows) / 1024}
    return out


def _same_features(a: Any, b: Any) -> None:
    """The row that came back holds the same tensors (a transfer that changed them would change transcripts)."""
    import torch

    def tensors(x: Any) -> list[Any]:
        found: list[Any] = []
        seen: set[int] = set()

        def walk(v: Any) -> None:
            if id(v) in seen:
                return
            seen.add(id(v))
            if isinstance(v, torch.Tensor):
                found.append(v)
            elif isinstance(v, Mapping):
                for w in v.values():
                    walk(w)
            elif isinstance(v, list | tuple):
                for w in v:
                    walk(w)
            elif hasattr(v, "__dict__") or hasattr(v, "__slots__"):
                for name in getattr(v, "__slots__", ()) or vars(v):
                    walk(getattr(v, name, None))

        walk(x)
        return found

    ta, tb = tensors(a), tensors(b)
    assert ta and len(ta) == len(tb) and all(torch.equal(x, y) and x.dtype == y.dtype for x, y in zip(ta, tb)), "transfer changed the features"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.render_cost", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="whisper-base")
    p.add_argument("--clips", type=int, default=300)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the engine would run")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")  # as in a front-end worker

    from bench.run import resolve_model
    from speechlm_batch import audio as audio_io
    from speechlm_batch import frontend
    from speechlm_batch.engine import llm_kwargs
    from speechlm_batch.settings import DecodeSettings, EngineSettings
    from speechlm_batch.sources import open_manifest

    model = resolve_model(args.model)
    cpu = args.device == "cpu"
    kwargs = llm_kwargs(EngineSettings(model=model, max_model_len=448), model, cpu)
    renderer = frontend.Renderer(kwargs)
    pieces = []
    for utt in open_manifest(REPO / "manifests" / "asterisk.jsonl"):
        audio = audio_io.read(utt, 16000)
        if not hasattr(audio, "samples") or audio.duration_s > 30:
            continue
        pieces.extend(audio_io.split(audio, 30.0, utt.id))
        if len(pieces) >= args.clips:
            break
    results = {}
    devices = ["cpu"] + ([] if cpu else ["cuda"])
    for device in devices:
        config = frontend.FrontendConfig(kwargs, DecodeSettings(), device, cpu)
        adapter = frontend.build_worker_adapter(config, renderer)
        token_prompts = TokenPrompts(renderer)
        for name, render in (("text", renderer.render), ("token ids", token_prompts.render)):
            render(adapter.request(pieces[0]))  # first-call costs out
            start = time.perf_counter()
            outs = [render(adapter.request(piece)) for piece in pieces]
            ms = 1000 * (time.perf_counter() - start) / len(pieces)
            results[f"{name}, log-mel on {device}"] = {"ms_per_clip": round(ms, 3), "clips": len(pieces)}
            results[f"{name}, log-mel on {device}"]["decoder_ids"] = _decoder_ids(outs[0].engine_input)
    for key, value in results.items():
        print(f"{key:32s} {value['ms_per_clip']:8.3f} ms a clip  decoder ids {value['decoder_ids']}")
    results["transfer"] = transfer_cost(renderer, frontend.build_worker_adapter(
        frontend.FrontendConfig(kwargs, DecodeSettings(), "cpu", cpu), renderer), pieces)
    for key, value in results["transfer"].items():
        print(f"transfer, {key:22s} pickle {value['dumps_ms']:7.3f} ms  unpickle {value['loads_ms']:7.3f} ms a clip"
              f"  ({value['kib_per_clip']:.0f} KiB)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
