"""Input kinds end to end on the real engine: a folder of audio, a list of paths, a manifest with other keys."""

from __future__ import annotations

import json
import shutil

import pytest

from speechlm_batch import runner
from speechlm_batch.metrics import normalize
from speechlm_batch.outputs import read_predictions
from speechlm_batch.settings import EngineSettings, RunSettings
from speechlm_batch.sources import open_input

pytestmark = pytest.mark.engine


def _run(engine, source, out):
    settings = RunSettings(engine=EngineSettings(model="whisper-base"))
    outcome = runner.run_source(source, settings, out, model_path=engine.info.name, engine=engine)
    rows = {r["_id"]: r for r in read_predictions(outcome.predictions_path)}
    return rows, json.loads(outcome.report_path.read_text())


def test_folder_list_and_renamed_keys(engine, manifests_dir, tmp_path):
    refs = [json.loads(line) for line in (manifests_dir / "librivox.jsonl").read_text().splitlines()][:2]
    folder = tmp_path / "clips" / "nested"
    folder.mkdir(parents=True)
    for ref in refs:
        shutil.copy(manifests_dir / ref["audio_filepath"], folder)
    names = [ref["audio_filepath"].rsplit("/", 1)[1] for ref in refs]

    rows, report = _run(engine, open_input(str(tmp_path / "clips")), tmp_path / "out-folder")
    assert sorted(rows) == sorted(f"nested/{n}" for n in names)
    for ref, name in zip(refs, names, strict=True):
        assert normalize(rows[f"nested/{name}"]["pred_text"]) == normalize(ref["text"])
    assert report["rows"]["ok"] == 2 and not (report.get("wer") or {}).get("reference_words")  # no text: no WER

    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(f"clips/nested/{n}" for n in names) + "\n")
    rows, _ = _run(engine, open_input(str(listing)), tmp_path / "out-list")
    assert [normalize(rows[f"clips/nested/{n}"]["pred_text"]) for n in names] == [normalize(r["text"]) for r in refs]

    manifest = tmp_path / "renamed.jsonl"
    manifest.write_text("".join(
        json.dumps({"wav": f"clips/nested/{n}", "sentence": r["text"]}) + "\n" for n, r in zip(names, refs, strict=True)
    ))
    rows, report = _run(engine, open_input(str(manifest), ("wav", "sentence")), tmp_path / "out-keys")
    assert report["wer"]["reference_words"] == sum(len(r["text"].split()) for r in refs)
    assert report["wer"]["wer_percent"] == 0.0
