"""evaluation and the eval / report commands, with a fake engine that answers known texts (no vLLM).

WERs are hand-computed from the fixed predictions, so these tests pin the scoring path end to end: dropped
rows, the leaderboard file format, the average rule, the chunked join, and re-scoring without a model.
"""

from __future__ import annotations

import json
from pathlib import Path

import fakes
import pytest
from fakes import FakeAdapter
from test_hf_source import make_dataset
from typer.testing import CliRunner

from speechlm_batch import cli, evaluation, rescoring, runner
from speechlm_batch.cli import console as ui
from speechlm_batch.engine import Engine
from speechlm_batch.scoring import Scorer
from speechlm_batch.settings import EngineSettings, RunSettings
from speechlm_batch.sources import leaderboard as lb

# Dataset "alpha": refs by id, two rows dropped before inference (empty, "ignore time segment in scoring").
ALPHA = {
    "text": ["Hello there.", "", "the cat sat", "ignore time segment in scoring", "[noise] Good bye"],
    "id": ["a", "b", "c", "d", "e"],
}
# Dataset "beta": a `sentence` column and no ids (ids are dataset indices).
BETA = {"sentence": ["first one", "second one"]}
PREDICTIONS = {
    "a": "hello there",  # 0 errors / 2 words
    "c": "the cat sit",  # 1 substitution / 3 words
    "e": "good bye bye",  # 1 insertion / 2 words ("[noise]" is removed by the normalizer)
    "0": "First one.",  # 0 / 2
    "1": "",  # 2 deletions / 2
}
ALPHA_WER = 100 * 2 / 7
BETA_WER = 100 * 2 / 4


def _engine() -> fakes.FakeEngine:
    """Answers each utterance with PREDICTIONS[id]; every request costs 0.01 s of "engine time"."""
    return fakes.FakeEngine(lambda utterance_id: PREDICTIONS.get(utterance_id, ""), load_s=1.5, cost_s=0.01)


@pytest.fixture(autouse=True)
def fake_adapter(monkeypatch):
    monkeypatch.setattr(runner, "resolve_adapter", lambda info, decode: FakeAdapter())


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    make_dataset(ALPHA, [0.5, 0.6, 0.7, 0.8, 0.9]).save_to_disk(str(root / "alpha"))
    make_dataset(BETA, [0.4, 0.3]).save_to_disk(str(root / "beta"))
    return root


def _settings() -> RunSettings:
    return RunSettings(engine=EngineSettings(model="org/fake-model"))


def _eval(data: Path, out: Path, engine=None, **kwargs) -> evaluation.EvalOutcome:
    targets = [evaluation.target_from_hf(str(data / "alpha")), evaluation.target_from_hf(str(data / "beta"))]
    engine = engine or _engine()
    return evaluation.run_eval(
        targets, _settings(), out, model_path="fake-model", model_id="org/fake-model", engine=engine, **kwargs
    )


def test_eval_scores_and_files(data, tmp_path):
    outcome = _eval(data, tmp_path)
    payload = json.loads((tmp_path / "results.json").read_text())
    by_name = {d["name"]: d for d in payload["datasets"]}
    assert by_name["alpha"]["wer_percent"] == pytest.approx(round(ALPHA_WER, 2))
    assert by_name["beta"]["wer_percent"] == pytest.approx(BETA_WER)
    alpha = by_name["alpha"]["wer_stats"]
    assert (alpha["substitutions"], alpha["deletions"], alpha["insertions"], alpha["reference_words"]) == (1, 0, 1, 7)
    assert by_name["alpha"]["rows"] == 3 and by_name["alpha"]["dropped_refs"] == 2
    assert {r["dataset"]: r["rows_dropped_before_inference"] for r in payload["runs"]} == {"alpha": 2, "beta": 0}
    # Both RTFx, load time and settings are in results.json.
    run = payload["runs"][0]
    assert run["rtfx_engine"] > 0 and run["rtfx_end_to_end"] > 0 and run["load_s"] == 1.5
    assert payload["settings"]["engine"]["model"] == "org/fake-model" and payload["load_s"] == 1.5
    assert (tmp_path / "results.md").read_text().count("| alpha |") == 2  # WER table and timing table
    assert "<svg" in (tmp_path / "results.html").read_text()
    for name in ("alpha", "beta"):
        assert (tmp_path / name / "predictions.jsonl").is_file() and (tmp_path / name / "report.json").is_file()
    assert outcome.rows_failed == 0 and not outcome.interrupted


def test_average_is_the_mean_of_rounded_per_dataset_wers(data, tmp_path):
    _eval(data, tmp_path)
    payload = json.loads((tmp_path / "results.json").read_text())
    expected = round((round(ALPHA_WER, 2) + round(BETA_WER, 2)) / 2, 2)
    assert payload["average_wer_percent"] == expected
    pooled = 100 * (2 + 2) / (7 + 4)  # what a sum-over-all-datasets WER would give instead
    assert abs(payload["average_wer_percent"] - pooled) > 1
    total_audio = sum(d["audio_s"] for d in payload["datasets"])
    total_time = sum(d["time_s"] for d in payload["datasets"])
    assert payload["composite_rtfx"] == pytest.approx(total_audio / total_time)  # sum / sum, not a mean


def test_leaderboard_files_parse_with_five_keys(data, tmp_path):
    outcome = _eval(data, tmp_path)
    files = sorted(tmp_path.glob("MODEL_*_DATASET_*.jsonl"))
    assert [f.name for f in files] == [
        "MODEL_org-fake-model_DATASET_alpha__test.jsonl",
        "MODEL_org-fake-model_DATASET_beta__test.jsonl",
    ]
    rows = [json.loads(line) for line in files[0].read_text().splitlines()]
    assert all(set(r) == {"audio_filepath", "duration", "time", "text", "pred_text"} for r in rows)
    assert [r["audio_filepath"] for r in rows] == ["a", "c", "e"]
    assert rows[2]["text"] == "[noise] Good bye" and rows[2]["pred_text"] == "good bye bye"  # raw, not normalized
    assert rows[0]["duration"] == pytest.approx(0.5, abs=1e-3)
    alpha_run = next(r for r in outcome.runs if r.result.name == "alpha")
    assert sum(r["time"] for r in rows) == pytest.approx(alpha_run.timing["time_s"])
    assert len({r["time"] for r in rows}) == 1  # spread evenly


def test_one_engine_for_all_datasets(data, tmp_path, monkeypatch):
    created: list[fakes.FakeEngine] = []

    def create(settings, model_path, timestamps=True):
        created.append(_engine())
        return created[-1]

    monkeypatch.setattr(Engine, "create", staticmethod(create))
    targets = [evaluation.target_from_hf(str(data / "alpha")), evaluation.target_from_hf(str(data / "beta"))]
    evaluation.run_eval(targets, _settings(), tmp_path, model_path="fake-model", model_id="m")
    assert len(created) == 1 and created[0].shutdowns == 1
    shared = _engine()
    _eval(data, tmp_path / "shared", engine=shared)
    assert shared.shutdowns == 0  # the caller's engine is left running


def test_rerun_resumes_and_keeps_scores(data, tmp_path):
    first = json.loads((_eval(data, tmp_path).files[0]).read_text())
    engine = _engine()
    second = json.loads((_eval(data, tmp_path, engine=engine).files[0]).read_text())
    assert engine.busy_s == 0.0  # nothing transcribed again
    assert second["average_wer_percent"] == first["average_wer_percent"]
    assert second["composite_rtfx"] == pytest.approx(first["composite_rtfx"])  # time read back from report.json


def test_chunk_run_writes_only_its_shard(data, tmp_path):
    from speechlm_batch.sharding import ChunkSpec

    outcome = _eval(data, tmp_path, chunk=ChunkSpec.parse("0/2"))
    assert outcome.payload is None and not (tmp_path / "results.json").exists()
    assert not list(tmp_path.glob("MODEL_*"))
    assert list((tmp_path / "alpha").glob("predictions.chunk-*.jsonl"))


def test_report_rescores_leaderboard_files_and_predictions(data, tmp_path):
    original = json.loads(_eval(data, tmp_path).files[0].read_text())
    from_lb = rescoring.rescore(tmp_path, output_dir=tmp_path / "lb")
    assert from_lb.payload["average_wer_percent"] == original["average_wer_percent"]
    assert from_lb.payload["composite_rtfx"] == pytest.approx(original["composite_rtfx"])
    assert {d.name: d.dropped_refs for d in from_lb.summary.datasets} == {"alpha": 2, "beta": 0}
    for name in ("results.json", "results.md", "results.html"):
        assert (tmp_path / "lb" / name).is_file()
    lb_bytes = {f.name: f.read_bytes() for f in tmp_path.glob("MODEL_*.jsonl")}
    for f in tmp_path.glob("MODEL_*.jsonl"):
        f.unlink()
    from_pred = rescoring.rescore(tmp_path, prefer="predictions")
    assert {d.name: d.wer_percent for d in from_pred.summary.datasets} == {
        d["name"]: d["wer_percent"] for d in original["datasets"]
    }
    assert {r["dataset"]: r["rows_dropped_before_inference"] for r in from_pred.payload["runs"]}["alpha"] == 2
    assert {f.name: f.read_bytes() for f in tmp_path.glob("MODEL_*.jsonl")} == lb_bytes  # rebuilt identically


def test_chunked_rows_are_joined_per_call_before_scoring(tmp_path):
    reference = "the quarter was strong and revenue grew very fast"
    chunks = [  # out of order on purpose; every chunk carries the call-level reference
        {"chunk_index": 1, "pred_text": "revenue grew very fast"},
        {"chunk_index": 0, "pred_text": "the quarter was strong and"},
    ]
    rows = [
        {"audio_filepath": f"call1_{c['chunk_index']}", "duration": 5.0, "time": 0.5, "text": reference,
         "parent_id": "call1", **c}
        for c in chunks
    ]
    name = "MODEL_m_DATASET_ArtificialAnalysis-Earnings22-Cleaned-AA-chunked__test.jsonl"
    (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    outcome = rescoring.rescore(tmp_path)
    result = outcome.summary.datasets[0]
    assert result.name == "earnings22_cleaned_aa_chunked"
    assert result.wer_stats.reference_words == 9  # the call's reference counted once, not once per chunk
    assert result.wer == 0.0
    assert result.rtfx == pytest.approx(10.0 / 1.0)
    rows[0]["chunk_index"] = 2  # chunk 1 missing: warned, its words count as deleted
    (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    outcome = rescoring.rescore(tmp_path)
    assert any("not contiguous" in w for w in outcome.warnings)


def test_timing_extrapolates_a_resumed_run():
    report = {"rtfx": {"audio_s": 10.0}, "timings": {"engine_s": 2.0, "wall_s": 4.0}}
    whole = evaluation.timing_from_reports([report], 10.0)
    assert (whole["time_s"], whole["wall_s"], whole["time_extrapolated"]) == (2.0, 4.0, False)
    resumed = evaluation.timing_from_reports([report], 30.0)
    assert (resumed["time_s"], resumed["wall_s"], resumed["time_extrapolated"]) == (6.0, 12.0, True)
    assert evaluation.timing_from_reports([], 5.0)["time_s"] is None


# ---------------------------------------------------------------------------------------------- CLI


@pytest.fixture
def cli_engine(monkeypatch):
    monkeypatch.setattr(Engine, "create", staticmethod(lambda settings, model_path, timestamps=True: _engine()))
    monkeypatch.setattr("speechlm_batch.cli.common.resolve_model", lambda name: "fake-model")
    monkeypatch.setattr(ui.console, "width", 300)
    monkeypatch.setattr(ui.out, "width", 300)


def invoke(*args) -> tuple[int, str]:
    import signal

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with CliRunner().isolation() as (stdout, stderr, _):
            try:
                cli.app(args=[str(a) for a in args], standalone_mode=False)
                code = 0
            except SystemExit as e:
                code = e.code
            except Exception as e:  # noqa: BLE001 - map run failures as cli.main does
                import click

                if isinstance(e, click.exceptions.Exit):
                    code = e.exit_code
                elif hasattr(e, "exit_code"):
                    ui.console.print(f"error: {e}\nhint: {getattr(e, 'hint', '')}")
                    code = e.exit_code
                else:
                    raise
            return code, stdout.getvalue().decode() + stderr.getvalue().decode()
    finally:
        for s, h in saved.items():
            signal.signal(s, h)


def test_cli_eval_named_set_from_mirror(cli_engine, tmp_path):
    mirror = tmp_path / "mirror"
    make_dataset(ALPHA, [0.5, 0.6, 0.7, 0.8, 0.9]).save_to_disk(str(lb.REGISTRY["ami"].mirror_dir(mirror)))
    code, text = invoke("eval", "--dataset", "ami", "--datasets-dir", mirror, "-o", tmp_path / "out", "-m", "org/m")
    assert code == 0, text
    assert "ami" in text and f"{round(ALPHA_WER, 2):.2f}" in text
    assert (tmp_path / "out" / "MODEL_org-m_DATASET_hf-audio-esb-datasets-test-only-sorted_ami_test.jsonl").is_file()
    assert (tmp_path / "out" / "results.json").is_file()
    code, text = invoke("report", tmp_path / "out")
    assert code == 0 and f"{round(ALPHA_WER, 2):.2f}" in text


def fake_hf_cache(cache: Path, repo_id: str, config: str, split: str, dataset) -> None:
    """Put `dataset` where `datasets` looks for a hub dataset prepared earlier (offline mode reads it there).

    The layout is `datasets` internals (`<namespace>___<name>/<config>/<version>/<hash>/`), made by its own
    parquet builder; it is what `load_dataset(repo_id, config)` leaves behind on a machine with network.
    """
    from datasets.packaged_modules.parquet.parquet import Parquet

    namespace, name = repo_id.split("/")
    parquet = cache / "src.parquet"
    dataset.to_parquet(str(parquet))
    builder = Parquet(cache_dir=str(cache / "tmp"), dataset_name=name, config_name=config,
                      data_files={split: [str(parquet)]}, hash="0" * 16)
    builder.download_and_prepare()
    target = cache / f"{namespace}___{name}" / config / "0.0.0"
    target.mkdir(parents=True)
    Path(builder.cache_dir).rename(target / ("0" * 16))


def test_cli_eval_named_set_from_the_hf_cache_offline(cli_engine, tmp_path, monkeypatch):
    import datasets.config

    cache = tmp_path / "hf-datasets-cache"
    fake_hf_cache(cache, "hf-audio/esb-datasets-test-only-sorted", "ami", "test", make_dataset(ALPHA, [0.5] * 5))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.delenv("SPEECHLM_BATCH_DATASETS", raising=False)
    code, text = invoke("eval", "--dataset", "ami", "-o", tmp_path / "out", "-m", "org/m", "--limit", "2")
    assert code == 0, text
    payload = json.loads((tmp_path / "out" / "results.json").read_text())
    assert payload["datasets"][0]["name"] == "ami" and payload["datasets"][0]["rows"] == 2  # --limit
    assert payload["runs"][0]["rows_dropped_before_inference"] == 1  # the empty reference read on the way


def test_cli_eval_named_set_not_available(cli_engine, tmp_path, monkeypatch):
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    code, text = invoke("eval", "--dataset", "ami", "--datasets-dir", tmp_path / "empty", "-o", tmp_path / "out")
    assert code == 3
    assert "hf-audio/esb-datasets-test-only-sorted" in text and "huggingface-cli download" in text
    assert not (tmp_path / "out").exists()  # failed before any engine or output


def test_cli_eval_needs_exactly_one_input(cli_engine, tmp_path):
    code, text = invoke("eval", "-o", tmp_path)
    assert code == 2 and "--hf-dataset" in text


# ---------------------------------------------------------------------------------------------- failed rows

# Dataset "gamma": row "g2" has audio that does not decode, so it fails; its reference still counts.
GAMMA_TEXTS = {"g0": "hello there", "g1": "the white paper", "g2": "three lost words"}
GAMMA_PREDICTIONS = {"g0": "hello there", "g1": "the whitepaper"}


@pytest.fixture(scope="module")
def gamma(tmp_path_factory) -> Path:
    from datasets import Audio, Dataset
    from test_hf_source import tone_bytes

    folder = tmp_path_factory.mktemp("gamma") / "gamma"
    audio = [{"bytes": tone_bytes(0.5), "path": "g0.wav"}, {"bytes": tone_bytes(0.7), "path": "g1.wav"},
             {"bytes": b"this is not audio", "path": "g2.wav"}]
    columns = {"audio": audio, "text": list(GAMMA_TEXTS.values()), "id": list(GAMMA_TEXTS)}
    Dataset.from_dict(columns).cast_column("audio", Audio()).save_to_disk(str(folder))
    return folder


def _board_wer(leaderboard_file: Path, scoring) -> float:
    """What the leaderboard's scorer computes from the file: both sides normalized, kaldialign, compounds merged."""
    import kaldialign

    rows = [json.loads(line) for line in leaderboard_file.read_text().splitlines()]
    refs = [tuple(scoring.normalize(r["text"]).split()) for r in rows]
    hyps = [tuple(scoring.normalize(r["pred_text"]).split()) for r in rows]
    return kaldialign.batch_error_rate(refs, hyps, merge_compounds=True)["err_rate"]


@pytest.mark.parametrize("scorer", ["2026", "classic"])
def test_failed_rows_score_alike_in_eval_report_and_leaderboard_file(gamma, tmp_path, scorer):
    from speechlm_batch.scoring import Scoring

    engine = fakes.FakeEngine(lambda utterance_id: GAMMA_PREDICTIONS.get(utterance_id, ""))
    settings = RunSettings(engine=EngineSettings(model="org/fake-model"), scorer=scorer)
    outcome = evaluation.run_eval(
        [evaluation.target_from_hf(str(gamma))], settings, tmp_path, model_path="fake-model", model_id="m",
        engine=engine,
    )
    evaluated = outcome.summary.datasets[0]
    assert evaluated.failed == 1 and evaluated.failed_scored == 1 and outcome.rows_failed == 1
    # 2026: "white paper" == "whitepaper"; the failed row's 3 words are deleted: 3 errors over 8 words.
    # classic: the compound costs S + D as well: 5 errors over 8.
    assert evaluated.wer == pytest.approx(3 / 8 if scorer == "2026" else 5 / 8)
    assert evaluated.wer_ok_only == pytest.approx(0 / 5 if scorer == "2026" else 2 / 5)
    from_files = rescoring.rescore(tmp_path, output_dir=tmp_path / "lb", scorer=Scorer(scorer)).summary.datasets[0]
    from_rows = rescoring.rescore(tmp_path, prefer="predictions", output_dir=tmp_path / "pr", scorer=Scorer(scorer))
    for other in (from_files, from_rows.summary.datasets[0]):  # to the last digit
        assert (other.wer, other.wer_ok_only, other.failed, other.wer_stats) == (
            evaluated.wer, evaluated.wer_ok_only, evaluated.failed, evaluated.wer_stats
        )
    if scorer == "2026":
        leaderboard_file = next(tmp_path.glob("MODEL_*.jsonl"))
        assert _board_wer(leaderboard_file, Scoring()) == evaluated.wer
    payload = json.loads((tmp_path / "results.json").read_text())
    assert payload["scorer"] == scorer and payload["datasets"][0]["failed"] == 1
    assert "WER ok rows" in (tmp_path / "results.md").read_text()


def test_cli_report_scorer_and_eval_language_checks(cli_engine, tmp_path):
    mirror = tmp_path / "mirror"
    make_dataset(ALPHA, [0.5, 0.6, 0.7, 0.8, 0.9]).save_to_disk(str(lb.REGISTRY["ami"].mirror_dir(mirror)))
    code, text = invoke("eval", "-d", "ami", "--datasets-dir", mirror, "-o", tmp_path / "out", "--scorer", "classic")
    assert code == 0, text
    assert json.loads((tmp_path / "out" / "results.json").read_text())["scorer"] == "classic"
    code, text = invoke("report", tmp_path / "out", "--scorer", "2026")
    assert code == 0 and "scorer 2026" in text
    assert json.loads((tmp_path / "out" / "results.json").read_text())["scorer"] == "2026"
    code, text = invoke("report", tmp_path / "out", "--scorer", "2027")
    assert code == 2
    code, text = invoke("eval", "-d", "fleurs_de", "-o", tmp_path / "de")  # --language is en
    assert code == 2 and "fleurs_de" in text and "-l de" in text
    code, text = invoke("eval", "-d", "multilingual", "-l", "ja", "-o", tmp_path / "ja")
    assert code == 2 and "no multilingual sets" in text


def test_cli_eval_all_is_the_2026_public_set_with_stitched_earnings22(cli_engine, tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    specs = lb.expand(["all"])
    for spec in specs:
        if spec.chunked:  # two chunks of one call, each carrying the call's reference
            call = {"text": ["good morning and welcome"] * 2, "id": ["k1", "k0"], "parent_id": ["call", "call"],
                    "chunk_index": [1, 0]}
            make_dataset(call, [0.5, 0.5]).save_to_disk(str(spec.mirror_dir(mirror)))
        else:
            make_dataset(ALPHA, [0.5, 0.6, 0.7, 0.8, 0.9]).save_to_disk(str(spec.mirror_dir(mirror)))
    answers = {**PREDICTIONS, "k0": "good morning", "k1": "and welcome"}
    engine = fakes.FakeEngine(lambda utterance_id: answers.get(utterance_id, ""), cost_s=0.01)
    monkeypatch.setattr(Engine, "create", staticmethod(lambda settings, model_path, timestamps=True: engine))
    code, text = invoke("eval", "-d", "all", "--datasets-dir", mirror, "-o", tmp_path / "out", "-m", "org/m")
    assert code == 0, text
    assert engine.shutdowns == 1  # one engine for the seven sets
    payload = json.loads((tmp_path / "out" / "results.json").read_text())
    assert payload["scorer"] == "2026" and [d["name"] for d in payload["datasets"]] == [s.name for s in specs]
    by_name = {d["name"]: d for d in payload["datasets"]}
    stitched = by_name["earnings22_cleaned_aa_chunked"]["wer_stats"]
    assert (stitched["utterances"], stitched["reference_words"], stitched["errors"]) == (1, 4, 0)
    assert by_name["ami_cleaned"]["wer_percent"] == pytest.approx(round(ALPHA_WER, 2))
    assert payload["average_wer_percent"] == round((6 * round(ALPHA_WER, 2) + 0.0) / 7, 2)
    code, text = invoke("report", tmp_path / "out", "-o", tmp_path / "again")
    again = json.loads((tmp_path / "again" / "results.json").read_text())
    assert code == 0 and again["average_wer_percent"] == payload["average_wer_percent"]
