"""Convert a CTranslate2 (faster-whisper) Whisper folder into a Hugging Face Whisper folder.

The only Whisper checkpoints on the package registries are CTranslate2 `model.bin` files (see
docs/offline-assets.md §2-3). vLLM and transformers load Hugging Face folders, so the project reads the CT2
binary itself with numpy (the `ctranslate2` package cannot write other formats) and writes `model.safetensors`
plus the transformers config, generation config, tokenizer and feature-extractor files. The weights stay
float16 as stored: the conversion is lossless.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speechlm_batch.errors import OfflineAssetError

SUPPORTED_BINARY_VERSION = 6
SPEC_NAME = "WhisperSpec"
# Whisper's timestamp tokens <|0.00|> ... <|30.00|> follow <|notimestamps|> and fill the embedding table.
TIMESTAMP_TOKENS = 1501

_DTYPES = {0: np.dtype("<f4"), 1: np.dtype("i1"), 2: np.dtype("<i2"), 3: np.dtype("<i4"), 4: np.dtype("<f2"),
           5: np.dtype("<u2")}  # 5 is bfloat16, read as raw 16-bit words
_BF16 = 5
_PARAMS = {"weight": "weight", "bias": "bias", "gamma": "weight", "beta": "bias"}
_TOP_MODULES = {
    "encoder/conv1": "model.encoder.conv1",
    "encoder/conv2": "model.encoder.conv2",
    "encoder/layer_norm": "model.encoder.layer_norm",
    "decoder/layer_norm": "model.decoder.layer_norm",
    "encoder/position_encodings": "model.encoder.embed_positions",
    "decoder/position_encodings": "model.decoder.embed_positions",
    "decoder/embeddings": "model.decoder.embed_tokens",
    "decoder/projection": "proj_out",
}
_LAYER_MODULES = {
    "self_attention/linear_1": "self_attn.out_proj",
    "self_attention/layer_norm": "self_attn_layer_norm",
    "attention/linear_0": "encoder_attn.q_proj",
    "attention/linear_2": "encoder_attn.out_proj",
    "attention/layer_norm": "encoder_attn_layer_norm",
    "ffn/linear_0": "fc1",
    "ffn/linear_1": "fc2",
    "ffn/layer_norm": "final_layer_norm",
}
# CT2 fuses these projections row-wise; HF keeps them apart (and k_proj has no bias).
_FUSED_MODULES = {
    "self_attention/linear_0": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "attention/linear_1": ("encoder_attn.k_proj", "encoder_attn.v_proj"),
}
_EMBED = "model.decoder.embed_tokens.weight"
_LAYER_NAME = re.compile(r"^(encoder|decoder)/layer_(\d+)/(.+)/(\w+)$")


@dataclass(frozen=True)
class CT2Model:
    """The parsed contents of a CT2 `model.bin`: every variable (aliases resolved) as a numpy array."""

    spec_name: str
    spec_revision: int
    variables: dict[str, np.ndarray]


@dataclass(frozen=True)
class WhisperArch:
    """The architecture, read from the weight shapes (and the heads from CT2's scalar variables)."""

    d_model: int
    encoder_layers: int
    decoder_layers: int
    encoder_heads: int
    decoder_heads: int
    ffn_dim: int
    num_mel_bins: int
    vocab_size: int
    max_source_positions: int
    max_target_positions: int

    @property
    def is_multilingual(self) -> bool:
        """English-only checkpoints have 51,864 rows, multilingual ones 51,865 or more (large-v3)."""
        return self.vocab_size >= 51865


@dataclass(frozen=True)
class SpecialIds:
    """Whisper's control tokens, looked up by name in the package's tokenizer.json."""

    eot: int
    sot: int
    no_timestamps: int
    prev_sot: int
    transcribe: int | None
    translate: int | None


class _Reader:
    """A cursor over the model bytes whose every read names the file when the data ends early."""

    def __init__(self, data: bytes, source: str) -> None:
        self.data = memoryview(data)
        self.source = source
        self.offset = 0

    def take(self, nbytes: int) -> memoryview:
        end = self.offset + nbytes
        if end > len(self.data):
            raise OfflineAssetError(
                f"{self.source}: truncated CTranslate2 model (needs {end:,} bytes, has {len(self.data):,})",
                hint="the download or the split parts are incomplete: fetch the model again",
            )
        view = self.data[self.offset:end]
        self.offset = end
        return view

    def uint(self, fmt: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        raw = bytes(self.take(self.uint("H")))  # the length counts the trailing NUL
        return raw.rstrip(b"\0").decode("utf-8")


def model_bin_parts(src: Path) -> list[Path]:
    """Return `model.bin`, or `model.bin.part1`, `.part2`, ... in order (split to fit package size limits)."""
    single = src / "model.bin"
    if single.is_file():
        return [single]
    parts: list[Path] = []
    while (src / f"model.bin.part{len(parts) + 1}").is_file():
        parts.append(src / f"model.bin.part{len(parts) + 1}")
    if not parts:
        raise OfflineAssetError(f"{src}: no model.bin (or model.bin.part1, ...) found", hint="is this a CT2 folder?")
    return parts


def read_model_bin(paths: Sequence[Path]) -> CT2Model:
    """Parse a CT2 binary (version 6), given as one file or as parts that are concatenated in order."""
    source = " + ".join(str(p) for p in paths)
    reader = _Reader(b"".join(p.read_bytes() for p in paths), source)
    version = reader.uint("I")
    if version != SUPPORTED_BINARY_VERSION:
        raise OfflineAssetError(f"{source}: CTranslate2 binary version {version} is not supported (only 6)")
    spec_name, revision = reader.string(), reader.uint("I")
    if spec_name != SPEC_NAME:
        raise OfflineAssetError(f"{source}: spec {spec_name!r} is not a Whisper model ({SPEC_NAME})")
    variables = dict(_read_variable(reader) for _ in range(reader.uint("I")))
    for _ in range(reader.uint("I")):
        alias, target = reader.string(), reader.string()
        if target not in variables:
            raise OfflineAssetError(f"{source}: alias {alias!r} points to unknown variable {target!r}")
        variables[alias] = variables[target]
    if reader.offset != len(reader.data):
        raise OfflineAssetError(f"{source}: {len(reader.data) - reader.offset:,} unexpected bytes after the model")
    return CT2Model(spec_name, revision, variables)


def _read_variable(reader: _Reader) -> tuple[str, np.ndarray]:
    name = reader.string()
    shape = tuple(reader.uint("I") for _ in range(reader.uint("B")))
    code = reader.uint("B")
    nbytes = reader.uint("I")
    if code not in _DTYPES:
        raise OfflineAssetError(f"{reader.source}: variable {name!r} has unknown dtype code {code}")
    dtype = _DTYPES[code]
    if nbytes != dtype.itemsize * int(np.prod(shape, dtype=np.int64)):
        raise OfflineAssetError(f"{reader.source}: variable {name!r} has {nbytes} bytes for shape {shape}")
    array = np.frombuffer(reader.take(nbytes), dtype=dtype).reshape(shape)
    if code == _BF16:  # bfloat16 is the top half of a float32
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return name, array


def hf_state_dict(variables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Map CT2 variable names to HF Whisper names (float16); scalar settings are dropped."""
    state: dict[str, np.ndarray] = {}
    for name, array in variables.items():
        if array.ndim == 0:
            continue  # num_heads, activation, pre_norm, ...: settings, not weights
        for hf_name, tensor in _map_variable(name, array):
            if not np.issubdtype(tensor.dtype, np.floating):
                raise OfflineAssetError(f"CT2 variable {name!r} is {tensor.dtype}: quantized models are not supported")
            state[hf_name] = np.ascontiguousarray(tensor, dtype=np.float16)
    if "proj_out.weight" in state and np.array_equal(state["proj_out.weight"], state[_EMBED]):
        del state["proj_out.weight"]  # tied to the embeddings, as HF Whisper expects
    return state



def _map_variable(name: str, array: np.ndarray) -> list[tuple[str, np.ndarray]]:
    module, _, param = name.rpartition("/")
    if module in _TOP_MODULES and param in ("weight", "bias", "gamma", "beta", "encodings"):
        return [(f"{_TOP_MODULES[module]}.{_PARAMS.get(param, 'weight')}", array)]
    match = _LAYER_NAME.match(name)
    if match is None or match.group(4) not in _PARAMS:
        raise OfflineAssetError(f"CT2 variable {name!r} has no Hugging Face Whisper counterpart")
    side, index, sub, param = match.groups()
    prefix, hf_param = f"model.{side}.layers.{index}", _PARAMS[param]
    if sub in _LAYER_MODULES:
        return [(f"{prefix}.{_LAYER_MODULES[sub]}.{hf_param}", array)]
    if sub in _FUSED_MODULES:
        targets = _FUSED_MODULES[sub]
        blocks = np.split(array, len(targets), axis=0)
        # k_proj has no bias in HF; a key bias shifts every score of a query equally, so softmax ignores it.
        return [(f"{prefix}.{t}.{hf_param}", b) for t, b in zip(targets, blocks, strict=True)
                if not (t.endswith("k_proj") and hf_param == "bias")]
    raise OfflineAssetError(f"CT2 variable {name!r} has no Hugging Face Whisper counterpart")


def infer_arch(variables: dict[str, np.ndarray]) -> WhisperArch:
    """Read the Whisper dimensions from the CT2 weight shapes."""
    def layers(side: str) -> int:
        return len({m.group(2) for n in variables if (m := _LAYER_NAME.match(n)) and m.group(1) == side})

    def heads(side: str, d_model: int) -> int:
        scalar = variables.get(f"{side}/num_heads")
        return int(scalar) if scalar is not None else d_model // 64  # every Whisper size uses 64-dim heads

    try:
        d_model, mel_bins, _ = variables["encoder/conv1/weight"].shape
        return WhisperArch(
            d_model=d_model, encoder_layers=layers("encoder"), decoder_layers=layers("decoder"),
            encoder_heads=heads("encoder", d_model), decoder_heads=heads("decoder", d_model),
            ffn_dim=variables["encoder/layer_0/ffn/linear_0/weight"].shape[0], num_mel_bins=mel_bins,
            vocab_size=variables["decoder/embeddings/weight"].shape[0],
            max_source_positions=variables["encoder/position_encodings/encodings"].shape[0],
            max_target_positions=variables["decoder/position_encodings/encodings"].shape[0],
        )
    except KeyError as missing:
        raise OfflineAssetError(f"CT2 Whisper model lacks the variable {missing}") from None


def special_ids(tokenizer: dict, source: Path, multilingual: bool) -> SpecialIds:
    """Look Whisper's control tokens up in tokenizer.json's added tokens."""
    added = {t["content"]: t["id"] for t in tokenizer.get("added_tokens", [])}
    needed = ["<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>", "<|startofprev|>"]
    needed += ["<|transcribe|>", "<|translate|>"] if multilingual else []
    if missing := [t for t in needed if t not in added]:
        raise OfflineAssetError(f"{source}: the tokenizer lacks the special tokens {missing}")
    return SpecialIds(
        eot=added["<|endoftext|>"], sot=added["<|startoftranscript|>"], no_timestamps=added["<|notimestamps|>"],
        prev_sot=added["<|startofprev|>"], transcribe=added.get("<|transcribe|>") if multilingual else None,
        translate=added.get("<|translate|>") if multilingual else None,
    )


def convert(src: Path, dst: Path) -> Path:
    """Convert the CT2 Whisper folder `src` into a Hugging Face Whisper folder at `dst`.

    The folder is built next to `dst` and renamed into place at the end, so `dst` is never half written; an
    existing `dst` is replaced.

    Args:
        src: folder with `model.bin` (or `model.bin.part1`, ...), `config.json` and `tokenizer.json`.
        dst: the folder to create.

    Returns:
        `dst`, holding config.json, generation_config.json, model.safetensors, tokenizer.json,
        tokenizer_config.json and preprocessor_config.json.

    Raises:
        OfflineAssetError: a file is missing, truncated or not a CT2 Whisper model.
    """
    src, dst = Path(src), Path(dst)
    ct2_config = _read_json(src / "config.json")
    tokenizer = _read_json(src / "tokenizer.json")
    variables = read_model_bin(model_bin_parts(src)).variables
    arch = infer_arch(variables)
    ids = special_ids(tokenizer, src / "tokenizer.json", arch.is_multilingual)
    state = hf_state_dict(variables)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent))
    try:
        _write_weights(tmp, state)
        _write_config(tmp, arch, ids, ct2_config, tied="proj_out.weight" not in state)
        _write_generation_config(tmp, arch, ids, ct2_config, tokenizer)
        _write_tokenizer(tmp, tokenizer, arch, ids)
        _write_preprocessor(tmp, arch)
        _make_readable(tmp)
        _replace_dir(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dst


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OfflineAssetError(f"{path}: missing (a CT2 Whisper folder needs it)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise OfflineAssetError(f"{path}: not valid JSON ({exc})") from None


def _write_weights(folder: Path, state: dict[str, np.ndarray]) -> None:
    from safetensors.numpy import save_file

    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})


def _write_config(folder: Path, arch: WhisperArch, ids: SpecialIds, ct2_config: dict, tied: bool) -> None:
    from transformers import WhisperConfig

    config = WhisperConfig(
        architectures=["WhisperForConditionalGeneration"], dtype="float16",
        vocab_size=arch.vocab_size, num_mel_bins=arch.num_mel_bins, d_model=arch.d_model,
        encoder_layers=arch.encoder_layers, decoder_layers=arch.decoder_layers,
        encoder_attention_heads=arch.encoder_heads, decoder_attention_heads=arch.decoder_heads,
        encoder_ffn_dim=arch.ffn_dim, decoder_ffn_dim=arch.ffn_dim,
        max_source_positions=arch.max_source_positions, max_target_positions=arch.max_target_positions,
        pad_token_id=ids.eot, bos_token_id=ids.eot, eos_token_id=ids.eot, decoder_start_token_id=ids.sot,
        suppress_tokens=list(ct2_config.get("suppress_ids", [])),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin", [220, ids.eot])),
        tie_word_embeddings=tied,
    )
    config.save_pretrained(folder)


def _write_generation_config(folder: Path, arch: WhisperArch, ids: SpecialIds, ct2_config: dict,
                             tokenizer: dict) -> None:
    from transformers import GenerationConfig

    extra: dict = {"forced_decoder_ids": [[1, ids.no_timestamps]]}  # English-only: <|sot|><|notimestamps|>
    if arch.is_multilingual:
        lang_ids = set(ct2_config.get("lang_ids", []))
        extra = {  # language detected unless `language=` is passed, then transcribe (as OpenAI's checkpoints)
            "forced_decoder_ids": [[1, None], [2, ids.transcribe]],
            "lang_to_id": {t["content"]: t["id"] for t in tokenizer["added_tokens"] if t["id"] in lang_ids},
            "task_to_id": {"transcribe": ids.transcribe, "translate": ids.translate},
        }
    config = GenerationConfig(
        decoder_start_token_id=ids.sot, bos_token_id=ids.eot, eos_token_id=ids.eot, pad_token_id=ids.eot,
        max_length=arch.max_target_positions, no_timestamps_token_id=ids.no_timestamps,
        prev_sot_token_id=ids.prev_sot, is_multilingual=arch.is_multilingual, return_timestamps=False,
        max_initial_timestamp_index=50,
        suppress_tokens=list(ct2_config.get("suppress_ids", [])),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin", [220, ids.eot])),
        alignment_heads=[list(pair) for pair in ct2_config.get("alignment_heads", [])],
        **extra,
    )
    config.save_pretrained(folder)


def _write_tokenizer(folder: Path, tokenizer: dict, arch: WhisperArch, ids: SpecialIds) -> None:
    """Copy tokenizer.json, adding the timestamp tokens the packaged (older) tokenizers lack.

    Without them, an id the model can emit (any row past <|notimestamps|>) has no token, which some
    detokenizers reject; with them, len(tokenizer) equals the embedding rows, as in OpenAI's HF checkpoints.
    """
    tokenizer = json.loads(json.dumps(tokenizer))  # deep copy: the caller's dict stays as read
    added = tokenizer.setdefault("added_tokens", [])
    first = ids.no_timestamps + 1
    has_timestamps = any(t["id"] >= first for t in added)
    if not has_timestamps and first + TIMESTAMP_TOKENS == arch.vocab_size:
        added += [{"id": first + i, "content": f"<|{i * 0.02:.2f}|>", "single_word": False, "lstrip": False,
                   "rstrip": False, "normalized": False, "special": False} for i in range(TIMESTAMP_TOKENS)]
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False), encoding="utf-8")
    eot = next(t["content"] for t in added if t["id"] == ids.eot)
    config = {
        "tokenizer_class": "WhisperTokenizer", "processor_class": "WhisperProcessor",
        "bos_token": eot, "eos_token": eot, "pad_token": eot, "unk_token": eot,
        "add_prefix_space": False, "errors": "replace", "model_max_length": 1024,
        "clean_up_tokenization_spaces": False,  # True only strips spaces before punctuation (and warns)
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def _write_preprocessor(folder: Path, arch: WhisperArch) -> None:
    from transformers import WhisperFeatureExtractor

    WhisperFeatureExtractor(feature_size=arch.num_mel_bins).save_pretrained(folder)


def _make_readable(folder: Path) -> None:
    """mkdtemp makes the folder private; a model cache is often shared by a group, so open it for reading."""
    folder.chmod(0o755)
    for path in folder.iterdir():
        path.chmod(0o644)


def _replace_dir(tmp: Path, dst: Path) -> None:
    """Move the finished folder `tmp` to `dst`; an old `dst` is moved aside first and removed after."""
    old = None
    if dst.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".old", dir=dst.parent))
        dst.rename(old / dst.name)
    tmp.rename(dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
