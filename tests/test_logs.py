"""Log routing: the plan (file, environment for vLLM's children), vLLM's dictConfig, and in-process routing."""

from __future__ import annotations

import json
import logging
import logging.config
import os
import warnings

import pytest

from speechlm_batch import logs


def test_plan_puts_the_log_in_the_output_folder_and_leaves_user_variables_alone(tmp_path):
    plan = logs.plan(tmp_path, "transcribe.chunk-0001-of-0004", "error", environ={"TORCH_LOGS": "+dynamo"})
    assert plan.path == tmp_path / "logs" / "transcribe.chunk-0001-of-0004.log"
    assert plan.environ["VLLM_LOGGING_CONFIG_PATH"] == str(plan.config_path.absolute())
    assert plan.environ["VLLM_CONFIGURE_LOGGING"] == "1"
    assert plan.environ["TORCH_CPP_LOG_LEVEL"] == "ERROR"
    assert "TORCH_LOGS" not in plan.environ  # the user's own value wins
    assert plan.file_level == "info"


def test_verbose_levels_keep_torch_and_warnings_visible(tmp_path):
    plan = logs.plan(tmp_path, "run", "debug", environ={})
    assert plan.file_level == "debug"
    assert "TORCH_LOGS" not in plan.environ and "PYTHONWARNINGS" not in plan.environ
    with pytest.raises(ValueError):
        logs.plan(tmp_path, "run", "loud", environ={})


def test_vllm_config_is_valid_dictconfig_sending_info_to_the_file_only(tmp_path):
    plan = logs.plan(tmp_path, "run", "error", environ={})
    plan.path.parent.mkdir(parents=True)
    config = logs.vllm_config(plan)
    json.dumps(config)  # vLLM reads it as JSON
    assert config["handlers"]["terminal"]["level"] == "ERROR"
    assert config["handlers"]["terminal"]["stream"] == "ext://sys.stderr"  # vLLM's default is stdout
    assert config["handlers"]["file"]["level"] == "INFO"
    name = "vllm.test_logs_probe"
    logging.config.dictConfig(config)
    try:
        logging.getLogger(name).info("config dump")
        logging.getLogger(name).warning("weight cast")
    finally:
        for handler in logging.getLogger("vllm").handlers:
            handler.close()
        logging.getLogger("vllm").handlers = []
    text = plan.path.read_text()
    assert "config dump" in text and "weight cast" in text
    assert logs.count_levels(plan.path) == {"warning": 1, "error": 0}


def test_routed_sends_library_logs_and_warnings_to_the_file_and_restores_everything(tmp_path, capfd):
    plan = logs.plan(tmp_path, "run", "error", environ={})
    before = list(logging.getLogger("vllm").handlers)
    saved_env = {k: os.environ.get(k) for k in plan.environ}
    with logs.routed(plan):
        assert os.environ["VLLM_LOGGING_CONFIG_PATH"] == plan.environ["VLLM_LOGGING_CONFIG_PATH"]
        assert json.loads(plan.config_path.read_text())["loggers"]["vllm"]["propagate"] is False
        logging.getLogger("vllm.engine").warning("noisy engine warning")
        logging.getLogger("transformers.x").info("hf config dump")
        logging.getLogger("transformers.x").warning("hf warning")
        warnings.warn("a deprecation nobody can act on", FutureWarning, stacklevel=1)
        logging.getLogger("vllm.engine").error("a real problem")
    err = capfd.readouterr().err
    assert "a real problem" in err
    assert "noisy engine warning" not in err and "deprecation" not in err
    text = plan.path.read_text()
    assert "noisy engine warning" in text and "hf warning" in text and "deprecation nobody" in text
    assert "hf config dump" not in text  # transformers' info lines are whole config dumps
    assert logs.count_levels(plan.path) == {"warning": 3, "error": 1}
    assert logging.getLogger("vllm").handlers == before
    assert {k: os.environ.get(k) for k in plan.environ} == saved_env
