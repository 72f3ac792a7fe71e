# The README's Quickstart: `make demo` and `make test`. Each does all set-up it needs first.
VENV := .venv
DEMO_OUT := outputs/demo

.PHONY: setup demo test clean

setup:
	bash scripts/setup.sh

demo: setup
	$(VENV)/bin/speechlm-batch transcribe manifests/demo.jsonl --model whisper-base --output-dir $(DEMO_OUT) --overwrite

test: setup
	$(VENV)/bin/python -m pytest -q

clean:
	rm -rf outputs .pytest_cache
