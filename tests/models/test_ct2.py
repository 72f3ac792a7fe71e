"""The CT2 -> HF Whisper converter on a tiny synthetic model written in the documented v6 layout."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from speechlm_batch.errors import OfflineAssetError
from speechlm_batch.models import ct2

D_MODEL, HEADS, FFN, MELS = 8, 2, 16, 80
EN_VOCAB, MULTI_VOCAB = 51864, 51865
_DTYPE_CODES = {np.dtype("float32"): 0, np.dtype("int8"): 1, np.dtype("int16"): 2, np.dtype("int32"): 3,
                np.dtype("float16"): 4}


def _string(text: str) -> bytes:
    raw = text.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def ct2_bytes(variables: dict[str, np.ndarray], aliases: dict[str, str], version: int = 6) -> bytes:
    """Serialize variables in the CT2 binary layout of docs/offline-assets.md §3.1."""
    out = [struct.pack("<I", version), _string("WhisperSpec"), struct.pack("<I", 3), struct.pack("<I", len(variables))]
    for name, array in variables.items():
        out += [_string(name), struct.pack("<B", array.ndim), struct.pack(f"<{array.ndim}I", *array.shape),
                struct.pack("<B", _DTYPE_CODES[array.dtype]), struct.pack("<I", array.nbytes), array.tobytes()]
    out.append(struct.pack("<I", len(aliases)))
    for alias, target in aliases.items():
        out += [_string(alias), _string(target)]
    return b"".join(out)


def _linear(rng: np.random.Generator, prefix: str, rows: int, cols: int) -> dict[str, np.ndarray]:
    return {f"{prefix}/weight": rng.standard_normal((rows, cols)).astype(np.float16),
            f"{prefix}/bias": rng.standard_normal(rows).astype(np.float16)}


def _norm(rng: np.random.Generator, prefix: str) -> dict[str, np.ndarray]:
    return {f"{prefix}/gamma": rng.standard_normal(D_MODEL).astype(np.float16),
            f"{prefix}/beta": rng.standard_normal(D_MODEL).astype(np.float16)}


def _zero_k_bias(variables: dict[str, np.ndarray], name: str, k_block: int, blocks: int) -> None:
    bias = variables[name].copy()
    rows = bias.shape[0] // blocks
    bias[k_block * rows:(k_block + 1) * rows] = 0
    variables[name] = bias


def synthetic_variables(vocab: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A 1 + 1 layer Whisper with d_model 8, as CT2's WhisperSpec names it (scalars included)."""
    rng = np.random.default_rng(seed)
    v: dict[str, np.ndarray] = {
        "encoder/num_heads": np.array(HEADS, dtype=np.int16), "decoder/num_heads": np.array(HEADS, dtype=np.int16),
        "decoder/activation": np.array(3, dtype=np.int8),
        "encoder/conv1/weight": rng.standard_normal((D_MODEL, MELS, 3)).astype(np.float16),
        "encoder/conv1/bias": rng.standard_normal(D_MODEL).astype(np.float16),
        "encoder/conv2/weight": rng.standard_normal((D_MODEL, D_MODEL, 3)).astype(np.float16),
        "encoder/conv2/bias": rng.standard_normal(D_MODEL).astype(np.float16),
        "encoder/position_encodings/encodings": rng.standard_normal((1500, D_MODEL)).astype(np.float16),
        "decoder/position_encodings/encodings": rng.standard_normal((448, D_MODEL)).astype(np.float16),
        "decoder/embeddings/weight": rng.standard_normal((vocab, D_MODEL)).astype(np.float16),
    }
    v |= _norm(rng, "encoder/layer_norm") | _norm(rng, "decoder/layer_norm")
    for side in ("encoder", "decoder"):
        layer = f"{side}/layer_0"
        v |= _linear(rng, f"{layer}/self_attention/linear_0", 3 * D_MODEL, D_MODEL)
        v |= _linear(rng, f"{layer}/self_attention/linear_1", D_MODEL, D_MODEL)
        v |= _norm(rng, f"{layer}/self_attention/layer_norm") | _norm(rng, f"{layer}/ffn/layer_norm")
        v |= _linear(rng, f"{layer}/ffn/linear_0", FFN, D_MODEL) | _linear(rng, f"{layer}/ffn/linear_1", D_MODEL, FFN)
        _zero_k_bias(v, f"{layer}/self_attention/linear_0/bias", 1, 3)
    v |= _linear(rng, "decoder/layer_0/attention/linear_0", D_MODEL, D_MODEL)
    v |= _linear(rng, "decoder/layer_0/attention/linear_1", 2 * D_MODEL, D_MODEL)
    v |= _linear(rng, "decoder/layer_0/attention/linear_2", D_MODEL, D_MODEL)
    v |= _norm(rng, "decoder/layer_0/attention/layer_norm")
    _zero_k_bias(v, "decoder/layer_0/attention/linear_1/bias", 0, 2)
    return v


def synthetic_tokenizer(multilingual: bool) -> dict:
    """A minimal tokenizer.json with Whisper's added special tokens at their real ids."""
    eot = 50257 if multilingual else 50256
    names = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|zh|>"]
    langs_end = eot + 2 + 99  # 99 language tokens in both vocabularies, two of them written here
    added = [(eot + i, n) for i, n in enumerate(names)]
    added += [(langs_end + i, n) for i, n in enumerate(
        ["<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"])]
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for i, c in added],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False,
                  "vocab": {"a": 0, "b": 1, "Ġ": 2}, "merges": []},
    }


def write_ct2_folder(folder: Path, multilingual: bool, parts: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """Write a complete synthetic CT2 Whisper folder; returns the variables written."""
    variables = synthetic_variables(MULTI_VOCAB if multilingual else EN_VOCAB, seed)
    data = ct2_bytes(variables, {"decoder/projection/weight": "decoder/embeddings/weight"})
    folder.mkdir(parents=True, exist_ok=True)
    if parts == 1:
        (folder / "model.bin").write_bytes(data)
    else:
        cuts = [len(data) * k // parts for k in range(parts + 1)]
        for k in range(parts):
            (folder / f"model.bin.part{k + 1}").write_bytes(data[cuts[k]:cuts[k + 1]])
    eot = 50257 if multilingual else 50256
    config = {"alignment_heads": [[0, 1]], "lang_ids": [eot + 2, eot + 3], "suppress_ids": [1, 2],
              "suppress_ids_begin": [220, eot]}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "tokenizer.json").write_text(json.dumps(synthetic_tokenizer(multilingual)))
    (folder / "vocabulary.txt").write_text("a\nb\n")
    return variables


def _load(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(folder / "model.safetensors"))


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _expected_names() -> set[str]:
    names = {"model.encoder.conv1.weight", "model.encoder.conv1.bias", "model.encoder.conv2.weight",
             "model.encoder.conv2.bias", "model.encoder.embed_positions.weight", "model.encoder.layer_norm.weight",
             "model.encoder.layer_norm.bias", "model.decoder.embed_tokens.weight",
             "model.decoder.embed_positions.weight", "model.decoder.layer_norm.weight",
             "model.decoder.layer_norm.bias"}
    layer_modules = ["self_attn.q_proj", "self_attn.v_proj", "self_attn.out_proj", "fc1", "fc2"]
    norms = ["self_attn_layer_norm", "final_layer_norm"]
    for side in ("encoder", "decoder"):
        mods = layer_modules + (["encoder_attn.q_proj", "encoder_attn.v_proj", "encoder_attn.out_proj"]
                                if side == "decoder" else [])
        for mod in mods + norms + (["encoder_attn_layer_norm"] if side == "decoder" else []):
            names |= {f"model.{side}.layers.0.{mod}.weight", f"model.{side}.layers.0.{mod}.bias"}
        names.add(f"model.{side}.layers.0.self_attn.k_proj.weight")
    names.add("model.decoder.layers.0.encoder_attn.k_proj.weight")
    return names


def test_english_only_state_dict_names_shapes_and_split(tmp_path: Path) -> None:
    variables = write_ct2_folder(tmp_path / "ct2", multilingual=False)
    out = ct2.convert(tmp_path / "ct2", tmp_path / "hf")
    state = _load(out)
    assert set(state) == _expected_names()  # no k_proj bias, no proj_out (tied)
    assert all(t.dtype == np.float16 for t in state.values())
    fused = variables["encoder/layer_0/self_attention/linear_0/weight"]
    for k, name in enumerate(("q_proj", "k_proj", "v_proj")):
        np.testing.assert_array_equal(state[f"model.encoder.layers.0.self_attn.{name}.weight"],
                                      fused[k * D_MODEL:(k + 1) * D_MODEL])
    np.testing.assert_array_equal(state["model.decoder.layers.0.self_attn.v_proj.bias"],
                                  variables["decoder/layer_0/self_attention/linear_0/bias"][2 * D_MODEL:])
    cross = variables["decoder/layer_0/attention/linear_1/weight"]
    np.testing.assert_array_equal(state["model.decoder.layers.0.encoder_attn.v_proj.weight"], cross[D_MODEL:])
    np.testing.assert_array_equal(state["model.decoder.layers.0.final_layer_norm.weight"],
                                  variables["decoder/layer_0/ffn/layer_norm/gamma"])
    assert state["model.decoder.embed_tokens.weight"].shape == (EN_VOCAB, D_MODEL)
    assert state["model.encoder.conv1.weight"].shape == (D_MODEL, MELS, 3)
    assert state["model.encoder.embed_positions.weight"].shape == (1500, D_MODEL)


def test_english_only_configs(tmp_path: Path) -> None:
    write_ct2_folder(tmp_path / "ct2", multilingual=False)
    out = ct2.convert(tmp_path / "ct2", tmp_path / "hf")
    config = _json(out / "config.json")
    assert config["architectures"] == ["WhisperForConditionalGeneration"]
    assert (config["vocab_size"], config["d_model"], config["encoder_layers"], config["decoder_layers"]) == (
        EN_VOCAB, D_MODEL, 1, 1)
    assert (config["encoder_attention_heads"], config["encoder_ffn_dim"], config["num_mel_bins"]) == (HEADS, FFN, MELS)
    assert (config["eos_token_id"], config["decoder_start_token_id"]) == (50256, 50257)
    gen = _json(out / "generation_config.json")
    assert gen["forced_decoder_ids"] == [[1, 50362]]
    assert (gen["no_timestamps_token_id"], gen["decoder_start_token_id"], gen["is_multilingual"]) == (
        50362, 50257, False)
    assert (gen["suppress_tokens"], gen["begin_suppress_tokens"]) == ([1, 2], [220, 50256])
    assert gen["alignment_heads"] == [[0, 1]] and "lang_to_id" not in gen
    assert _json(out / "tokenizer_config.json")["tokenizer_class"] == "WhisperTokenizer"
    assert _json(out / "preprocessor_config.json")["feature_size"] == MELS
    added = _json(out / "tokenizer.json")["added_tokens"]
    assert max(t["id"] for t in added) + 1 == EN_VOCAB  # timestamp tokens fill the embedding table
    assert {"id": 50363, "content": "<|0.00|>"}.items() <= next(t for t in added if t["id"] == 50363).items()
    assert not list(tmp_path.glob(".hf.*"))  # the temporary folder was renamed away


def test_multilingual_split_parts_equal_single_file(tmp_path: Path) -> None:
    write_ct2_folder(tmp_path / "one", multilingual=True)
    write_ct2_folder(tmp_path / "split", multilingual=True, parts=3)
    assert ct2.model_bin_parts(tmp_path / "split") == [tmp_path / "split" / f"model.bin.part{k}" for k in (1, 2, 3)]
    single = _load(ct2.convert(tmp_path / "one", tmp_path / "a"))
    split = _load(ct2.convert(tmp_path / "split", tmp_path / "b"))
    assert set(single) == set(split)
    for name in single:
        np.testing.assert_array_equal(single[name], split[name])
    gen = _json(tmp_path / "b" / "generation_config.json")
    assert gen["lang_to_id"] == {"<|en|>": 50259, "<|zh|>": 50260}
    assert gen["task_to_id"] == {"transcribe": 50359, "translate": 50358}
    assert (gen["eos_token_id"], gen["decoder_start_token_id"], gen["no_timestamps_token_id"]) == (50257, 50258, 50363)
    assert gen["is_multilingual"] is True and gen["forced_decoder_ids"] == [[1, None], [2, 50359]]


def test_aliases_resolve_and_untied_projection_is_kept(tmp_path: Path) -> None:
    variables = synthetic_variables(EN_VOCAB)
    parsed = ct2.read_model_bin([_write(tmp_path / "a.bin", ct2_bytes(variables, {"x/alias": "encoder/conv1/bias"}))])
    np.testing.assert_array_equal(parsed.variables["x/alias"], variables["encoder/conv1/bias"])
    projection = variables["decoder/embeddings/weight"] + np.float16(1)
    state = ct2.hf_state_dict(variables | {"decoder/projection/weight": projection})
    np.testing.assert_array_equal(state["proj_out.weight"], projection)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("keep", [3, 40, 5000, -1])
def test_truncated_model_bin_names_the_file(tmp_path: Path, keep: int) -> None:
    data = ct2_bytes(synthetic_variables(EN_VOCAB), {})
    path = _write(tmp_path / "model.bin", data[:keep])
    with pytest.raises(OfflineAssetError, match=r"model\.bin: truncated"):
        ct2.read_model_bin([path])


def test_missing_part_and_bad_header_are_clear(tmp_path: Path) -> None:
    folder = tmp_path / "ct2"
    write_ct2_folder(folder, multilingual=False, parts=2)
    (folder / "model.bin.part2").unlink()
    with pytest.raises(OfflineAssetError, match="part1: truncated"):
        ct2.convert(folder, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
    good = ct2_bytes({"encoder/conv1/bias": np.zeros(2, np.float16)}, {})
    with pytest.raises(OfflineAssetError, match="version 5 is not supported"):
        ct2.read_model_bin([_write(tmp_path / "v5.bin", ct2_bytes({}, {}, version=5))])
    with pytest.raises(OfflineAssetError, match="unexpected bytes"):
        ct2.read_model_bin([_write(tmp_path / "extra.bin", good + b"\0\0")])
    with pytest.raises(OfflineAssetError, match="no model.bin"):
        ct2.model_bin_parts(tmp_path)


def test_convert_replaces_an_existing_folder(tmp_path: Path) -> None:
    write_ct2_folder(tmp_path / "ct2", multilingual=False)
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "stale.txt").write_text("old")
    ct2.convert(tmp_path / "ct2", tmp_path / "hf")
    assert not (tmp_path / "hf" / "stale.txt").exists() and (tmp_path / "hf" / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct2", "hf"]


def test_converted_folder_loads_in_transformers(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from transformers import WhisperForConditionalGeneration

    variables = write_ct2_folder(tmp_path / "ct2", multilingual=True)
    ct2.convert(tmp_path / "ct2", tmp_path / "hf")
    model, info = WhisperForConditionalGeneration.from_pretrained(
        tmp_path / "hf", dtype=torch.float32, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()
    k_bias = model.model.encoder.layers[0].self_attn.k_proj.bias
    assert k_bias is None
    np.testing.assert_array_equal(model.model.encoder.layers[0].fc1.weight.detach().numpy(),
                                  variables["encoder/layer_0/ffn/linear_0/weight"].astype(np.float32))
