"""Child processes of the benchmark: one engine each, timed phases reported back as JSON.

    python -m bench.workers JOB.json RESULT.json

Kinds of job:
- `transformers`: `WhisperForConditionalGeneration.generate`, clips sorted by length, one timed pass per
  batch size after an untimed first batch (features, generate and decode are all timed).
- `vllm`: one engine (speechlm_batch.engine.Engine) and, in the order asked, the phases `naive` (one plain
  `LLM.generate` call over every clip, as a user would write it), `engine` (speechlm-batch's pipeline on
  pre-decoded audio) and `e2e` (speechlm-batch's pipeline from the manifest: decode, resample, write).
- `sb-chunk`: one of K engines sharing the accelerator: the `e2e` phase on chunk i/K of the manifest
  (the product's `--chunk i/K` split), started together through a file barrier once every engine is warm.

Every vLLM child ends with `os._exit(0)` after flushing its result: vLLM's engine core can otherwise keep
the process (and the accelerator's memory) alive.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import E2EVariant
from bench.corpus import SAMPLE_RATE, Corpus

NAIVE_MAX_TOKENS = 200  # what the published anchors used for the plain LLM.generate and transformers runs
LEADERBOARD_WARMUP_BATCHES = 10  # the leaderboard runner's --warmup_steps default (forced to 10 with --torch_compile)
BARRIER_POLL_S = 0.01


def _phase(name: str, started: float, t0: float, hyps: list[str], corpus_clips: int, audio_s: float, **extra: Any):
    return {"name": name, "started": started, "ended": time.time(), "wall_s": time.perf_counter() - t0,
            "hyps": hyps, "clips": corpus_clips, "audio_s": audio_s, "extra": extra}


# ---------------------------------------------------------------- transformers


def run_transformers(job: dict[str, Any]) -> dict[str, Any]:
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    device, dtype = job["device"], getattr(torch, job["dtype"])
    if device == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    start = time.perf_counter()
    model = WhisperForConditionalGeneration.from_pretrained(job["model"], dtype=dtype, attn_implementation="sdpa")
    model = model.to(device).eval()
    processor = WhisperProcessor.from_pretrained(job["model"])
    load_s = time.perf_counter() - start
    corpus = Corpus.load(Path(job["corpus"]))
    audio = [np.asarray(a) for a in corpus.audio()]
    order = sorted(range(len(audio)), key=lambda i: -len(audio[i]))  # similar lengths share a batch
    gen = {"max_new_tokens": NAIVE_MAX_TOKENS, "num_beams": 1, "do_sample": False}
    if model.config.vocab_size >= 51865:  # multilingual: pin English transcription like every other row
        gen.update(language="en", task="transcribe")

    def transcribe(indices: list[int]) -> list[str]:
        fe_device = device if device.startswith("cuda") else "cpu"
        feats = processor.feature_extractor([audio[i] for i in indices], sampling_rate=SAMPLE_RATE,
                                            return_tensors="pt", device=fe_device)
        with torch.inference_mode():
            out = model.generate(input_features=feats.input_features.to(device, dtype), **gen)
        return [t.strip() for t in processor.batch_decode(out, skip_special_tokens=True)]

    phases = []
    for batch in job["batches"]:
        transcribe(order[:batch])  # warm-up: kernels, allocator, first-call costs
        _sync(device)
        started, t0 = time.time(), time.perf_counter()
        hyps: list[str] = [""] * len(audio)
        for k in range(0, len(order), batch):
            idx = order[k : k + batch]
            for i, text in zip(idx, transcribe(idx)):
                hyps[i] = text
        _sync(device)
        phases.append(_phase(f"b{batch}", started, t0, hyps, len(audio), corpus.audio_s, batch=batch))
    return {"load_s": load_s, "phases": phases}


def run_transformers_compiled(job: dict[str, Any]) -> dict[str, Any]:
    """transformers as the Open ASR Leaderboard's runner runs Whisper (transformers/run_eval.py, --torch_compile):
    forward compiled (fullgraph), static KV cache, every batch padded to the batch size with its last clip,
    the MATH sdpa backend, 10 untimed warm-up batches generating the full max_new_tokens. Features, generate
    and decode are timed, as there."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    device, dtype = job["device"], getattr(torch, job["dtype"])
    torch.set_float32_matmul_precision("high")
    start = time.perf_counter()
    model = WhisperForConditionalGeneration.from_pretrained(job["model"], dtype=dtype, attn_implementation="sdpa")
    model = model.to(device).eval()
    model.forward = torch.compile(model.forward, mode=job.get("compile_mode", "max-autotune"), fullgraph=True)
    model.generation_config.cache_implementation = "static"
    processor = WhisperProcessor.from_pretrained(job["model"])
    load_s = time.perf_counter() - start
    corpus = Corpus.load(Path(job["corpus"]))
    audio = [np.asarray(a) for a in corpus.audio()]
    order = sorted(range(len(audio)), key=lambda i: -len(audio[i]))
    gen: dict[str, Any] = {"max_new_tokens": NAIVE_MAX_TOKENS, "num_beams": 1, "do_sample": False}
    if model.config.vocab_size >= 51865:
        gen.update(language="en", task="transcribe")

    def transcribe(indices: list[int], batch: int, **extra: Any) -> list[str]:
        clips = [audio[i] for i in indices]
        pad = batch - len(clips)
        clips += [clips[-1]] * pad  # one shape: no recompilation
        feats = processor.feature_extractor(clips, sampling_rate=SAMPLE_RATE, return_tensors="pt", device=device)
        with sdpa_kernel([SDPBackend.MATH]):
            out = model.generate(input_features=feats.input_features.to(device, dtype), **gen, **extra)
        out = out[: len(indices)]
        return [t.strip() for t in processor.batch_decode(out, skip_special_tokens=True)]

    phases = []
    for batch in job["batches"]:
        warm0 = time.perf_counter()
        for k in range(LEADERBOARD_WARMUP_BATCHES):
            idx = order[(k * batch) % len(order):][:batch]
            transcribe(idx, batch, min_new_tokens=NAIVE_MAX_TOKENS)
        _sync(device)
        warm_s = time.perf_counter() - warm0
        started, t0 = time.time(), time.perf_counter()
        hyps: list[str] = [""] * len(audio)
        for k in range(0, len(order), batch):
            idx = order[k : k + batch]
            for i, text in zip(idx, transcribe(idx, batch)):
                hyps[i] = text
        _sync(device)
        phases.append(_phase(f"c{batch}", started, t0, hyps, len(audio), corpus.audio_s, batch=batch, warmup_s=warm_s))
    return {"load_s": load_s, "phases": phases}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


# ---------------------------------------------------------------- vLLM / speechlm-batch


class ProcessorKwargsLLM:
    """`vllm.LLM` whose `enqueue` passes fixed `mm_processor_kwargs` (e.g. {"device": "cuda"}).

    This is what `Engine._enqueue` would do with an engine setting for it: the Whisper feature extractor
    then computes the log-mel on the accelerator instead of in the calling process's CPU.
    """

    def __init__(self, llm: Any, kwargs: dict[str, Any] | None) -> None:
        self._llm = llm
        self._kwargs = kwargs
        self.enqueue_s = 0.0  # the front end: rendering (features, hashing, serialisation) in this process

    def enqueue(self, *args: Any, **kw: Any) -> Any:
        if self._kwargs:
            kw.setdefault("mm_processor_kwargs", self._kwargs)
        start = time.perf_counter()
        try:
            return self._llm.enqueue(*args, **kw)
        finally:
            self.enqueue_s += time.perf_counter() - start

    def __getattr__(self, name: str) -> Any:
        return getattr(self._llm, name)


def _start_engine(job: dict[str, Any]):
    from speechlm_batch.adapters import resolve_adapter
    from speechlm_batch.engine import Engine
    from speechlm_batch.settings import DecodeSettings, EngineSettings, RunSettings

    settings = EngineSettings(**job["engine"])
    engine = Engine.create(settings, job["model"], timestamps=False)  # as `transcribe` without --timestamps
    raw_llm = engine.llm
    engine.llm = ProcessorKwargsLLM(raw_llm, {"device": job["mm_device"]} if job.get("mm_device") else None)
    adapter = resolve_adapter(engine.info, DecodeSettings())
    run = RunSettings(engine=settings, window_rows=job["window_rows"], decode_workers=job["decode_workers"],
                      frontend_workers=job.get("frontend_workers"), features_device=job.get("features_device"))
    return engine, raw_llm, adapter, run


def run_vllm(job: dict[str, Any]) -> dict[str, Any]:
    from speechlm_batch import pipeline

    engine, raw_llm, adapter, run = _start_engine(job)
    corpus = Corpus.load(Path(job["corpus"]))
    phases = []
    for name in job["phases"]:
        if name == "naive":
            phases.append(_naive(raw_llm, adapter, corpus))
        elif name == "engine":
            pipeline.warmup(engine, adapter)
            phases.append(_engine_only(engine, adapter, run, corpus))
        elif name == "ceiling":
            pipeline.warmup(engine, adapter)
            phases.append(_ceiling(engine, adapter, run, corpus))
        elif name in ("e2e", "e2e0") or name.startswith("e2e@"):  # e2e0: the front end in this process
            pipeline.warmup(engine, adapter)
            phase_run = _phase_run(run, name)
            with StackSampler(enabled=bool(job.get("sample_stacks"))) as stacks:
                phase = _end_to_end(engine, adapter, phase_run, corpus, Path(job["work"]) / name.replace(":", "-"),
                                    job["model"])
            if stacks.enabled:
                phase["extra"]["main_thread_stacks"] = stacks.top()
                print(f"bench: {name} main thread: " + json.dumps(stacks.top(8)), flush=True)
            phase["name"] = name
            phases.append(phase)
        print(f"bench: phase {name} done in {phases[-1]['wall_s']:.1f} s", flush=True)
    engine.shutdown()
    return {"load_s": engine.load_s, "phases": phases, "engine_kwargs": _jsonable(engine.kwargs)}


def _phase_run(run: Any, name: str) -> Any:
    """The run settings of an end-to-end phase: e2e0 in-process, "e2e@12:cpu" 12 workers with log-mel on the CPU."""
    if name == "e2e0":
        return replace(run, frontend_workers=0)
    if name.startswith("e2e@"):
        variant = E2EVariant.parse(name)
        return replace(run, frontend_workers=variant.workers, features_device=variant.device,
                       full_features=not variant.trim_features)
    return run


class StackSampler:
    """Where the main thread's time goes: its innermost frames, sampled every `interval_s` from a thread.

    A sample is the main thread's three innermost frames (module:function); `top` gives each stack's share of
    the samples. Coarse (the sampler needs the GIL to look), but enough to tell waiting on the front end from
    adding requests, stepping the engine or writing rows.
    """

    def __init__(self, enabled: bool, interval_s: float = 0.005) -> None:
        import threading

        self.enabled = enabled
        self.interval_s = interval_s
        self.counts: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True) if enabled else None
        self._main = threading.main_thread().ident

    def __enter__(self) -> StackSampler:
        if self._thread is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            frame = sys._current_frames().get(self._main)
            names = []
            while frame is not None and len(names) < 3:
                module = frame.f_globals.get("__name__", "?")
                names.append(f"{module}:{frame.f_code.co_name}")
                frame = frame.f_back
            key = " < ".join(names)
            self.counts[key] = self.counts.get(key, 0) + 1

    def top(self, n: int = 20) -> list[tuple[str, float]]:
        total = sum(self.counts.values()) or 1
        ranked = sorted(self.counts.items(), key=lambda kv: -kv[1])[:n]
        return [(key, round(count / total, 4)) for key, count in ranked]


def _naive(llm: Any, adapter: Any, corpus: Corpus) -> dict[str, Any]:
    from vllm import SamplingParams

    audio = [np.array(a) for a in corpus.audio()]
    prompts = [{"encoder_prompt": {"prompt": "", "multi_modal_data": {"audio": (a, SAMPLE_RATE)}},
                "decoder_prompt": adapter.decoder_prompt} for a in audio]
    params = SamplingParams(temperature=0.0, max_tokens=NAIVE_MAX_TOKENS)
    llm.generate(prompts[:2], params, use_tqdm=False)  # warm-up
    started, t0 = time.time(), time.perf_counter()
    outputs = llm.generate(prompts, params, use_tqdm=False)
    hyps = [o.outputs[0].text.strip() for o in outputs]
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    return _phase("naive", started, t0, hyps, len(audio), corpus.audio_s, generated_tokens=tokens)


def _ceiling(engine: Any, adapter: Any, run: Any, corpus: Corpus) -> dict[str, Any]:
    """The engine alone: every clip rendered (by the front-end pool, untimed), then all added and stepped."""
    from speechlm_batch import frontend
    from speechlm_batch.types import Utterance

    audio = [np.array(a) for a in corpus.audio()]
    items = [Utterance(c.id, i, c.path, {}, audio=(audio[i], SAMPLE_RATE)) for i, c in enumerate(corpus.clips)]
    workers = frontend.worker_count(run, engine.info.accelerator == "cpu") or 2
    config = frontend.pool_config(engine, run)  # as the product's pool
    render0 = time.perf_counter()
    with frontend.FrontendPool(config, workers) as pool:
        prepared = pool.collect([pool.submit(item) for item in items])
    render_s = time.perf_counter() - render0
    requests = [((i, p.index), p.request) for i, row in sorted(prepared.items()) for p in row.pieces]
    requests.sort(key=lambda kv: -_len_of(prepared[kv[0][0]], kv[0][1]))  # longest first, as the pipeline does
    hyps = [""] * len(items)
    started, t0 = time.time(), time.perf_counter()
    for completion in engine.run(requests, len(requests)):
        hyps[completion.key[0]] = adapter.postprocess(completion.text or "")
    phase = _phase("ceiling", started, t0, hyps, len(items), corpus.audio_s, render_untimed_s=render_s,
                   render_workers=workers)
    return phase


def _len_of(row: Any, index: int) -> int:
    return next(p.samples for p in row.pieces if p.index == index)


def _engine_only(engine: Any, adapter: Any, run: Any, corpus: Corpus) -> dict[str, Any]:
    from speechlm_batch import pipeline
    from speechlm_batch.outputs import InMemoryWriter
    from speechlm_batch.types import Utterance

    audio = [np.array(a) for a in corpus.audio()]
    items = [Utterance(c.id, i, c.path, {"id": c.id, "text": c.text}, text=c.text, audio=(audio[i], SAMPLE_RATE))
             for i, c in enumerate(corpus.clips)]
    sink = InMemoryWriter()
    front0 = engine.llm.enqueue_s
    started, t0 = time.time(), time.perf_counter()
    stats = pipeline.run(items, engine=engine, adapter=adapter, sink=sink, settings=run)
    phase = _phase("engine", started, t0, [], len(items), corpus.audio_s, **_stats(stats, engine.llm.enqueue_s - front0))
    by_id = {r["_id"]: r.get("pred_text") or "" for r in sink.rows}
    phase["hyps"] = [by_id.get(c.id, "") for c in corpus.clips]
    return phase


def _end_to_end(engine, adapter, run, corpus: Corpus, out_dir: Path, model: str, chunk=None) -> dict[str, Any]:
    """Manifest -> decode -> engine -> predictions file, as `transcribe` does it (engine already warm)."""
    from speechlm_batch import frontend, outputs, pipeline, runner
    from speechlm_batch.sources.manifest import ManifestSource

    source = ManifestSource(corpus.manifest)
    shard = runner.plan_shard(source, chunk)
    pool_start = time.perf_counter()
    pool = frontend.start_pool(engine, run)  # started before the clock, as runner starts it beside the engine
    pool_start_s = time.perf_counter() - pool_start
    front0 = engine.llm.enqueue_s
    started, t0 = time.time(), time.perf_counter()
    writer = outputs.PredictionWriter.open(out_dir, chunk, run.fingerprint(model), {}, overwrite=True)
    items = (it for it in source if it.position in shard.positions)
    try:
        stats = pipeline.run(items, engine=engine, adapter=adapter, sink=writer, settings=run, frontend_pool=pool)
    finally:
        if pool is not None:
            pool.close()
    writer.finish()
    phase = _phase("e2e", started, t0, [], len(shard.positions), 0.0, pool_start_s=pool_start_s,
                   **_stats(stats, engine.llm.enqueue_s - front0))
    preds = {r["_id"]: r.get("pred_text") or "" for r in outputs.read_predictions(writer.paths.predictions)}
    phase["hyps"] = {c.id: preds[c.id] for c in corpus.clips if c.id in preds}
    phase["audio_s"] = sum(c.duration_s for c in corpus.clips if c.id in preds)
    if chunk is None:
        phase["hyps"] = [phase["hyps"].get(c.id, "") for c in corpus.clips]
    return phase


def _stats(stats: Any, front_end_s: float) -> dict[str, Any]:
    return {"front_end_s": front_end_s, "rows": stats.rows, "rows_failed": stats.rows_failed, "decode_s": stats.decode_s,
            "render_s": stats.render_s, "frontend_workers": stats.frontend_workers, "frontend_replaced": stats.frontend_replaced,
            "frontend_wait_s": stats.frontend_wait_s, "frontend_receive_s": stats.frontend_receive_s,
            "engine_busy_s": stats.engine_s, "write_s": stats.write_s, "loop_wall_s": stats.wall_s}


def run_sb_chunk(job: dict[str, Any]) -> dict[str, Any]:
    from speechlm_batch import pipeline
    from speechlm_batch.sharding import ChunkSpec

    engine, _, adapter, run = _start_engine(job)
    corpus = Corpus.load(Path(job["corpus"]))
    pipeline.warmup(engine, adapter)
    barrier = Path(job["barrier"])
    (barrier / f"ready.{job['index']}").touch()
    while not (barrier / "go").exists():
        time.sleep(BARRIER_POLL_S)
    chunk = ChunkSpec(job["index"], job["count"])
    phase = _end_to_end(engine, adapter, run, corpus, Path(job["work"]) / f"e2e-x{job['count']}", job["model"], chunk)
    engine.shutdown()
    return {"load_s": engine.load_s, "phases": [phase], "engine_kwargs": _jsonable(engine.kwargs)}


def _jsonable(kwargs: Any) -> dict[str, Any]:
    return {k: (v if isinstance(v, (str, int, float, bool, type(None), dict, list)) else repr(v)) for k, v in kwargs.items()}


KINDS = {"transformers": run_transformers, "transformers-compiled": run_transformers_compiled, "vllm": run_vllm, "sb-chunk": run_sb_chunk}


def main(argv: list[str]) -> None:
    job = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    result_path = Path(argv[1])
    try:
        result = KINDS[job["kind"]](job)
    except BaseException as e:  # the parent records the failure as the row's note
        import traceback

        traceback.print_exc()
        result = {"error": f"{type(e).__name__}: {e}"}
    result_path.write_text(json.dumps(result), encoding="utf-8")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # vLLM's engine core may otherwise hold the process (and the GPU) open


if __name__ == "__main__":
    main(sys.argv[1:])
