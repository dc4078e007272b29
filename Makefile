# Two commands for a fresh machine: `make demo` and `make test`. Both create or refresh .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench bench-distill bench-squad bench-search bench-serve bench-variants bench-agora bench-fptas bench-latency bench-scale bench-students bench-qa clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/compress demo

test: $(STAMP)  # two pytest workers, one test file each (module fixtures stay in one process): 13 min, not 17.5
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

bench: bench-distill bench-squad bench-search bench-serve bench-variants bench-agora bench-fptas bench-latency bench-scale bench-students bench-qa

bench-distill: $(STAMP)
	$(BIN)/python benchmarks/bench_distill.py

bench-squad: $(STAMP)
	$(BIN)/python benchmarks/bench_squad.py

bench-search: $(STAMP)
	$(BIN)/python benchmarks/bench_search.py

bench-serve: $(STAMP)  # needs the SST-2 search of bench-search; wrk (Debian) drives the load
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/python benchmarks/bench_serve.py

bench-variants: $(STAMP)  # needs the SST-2 search of bench-search
	$(BIN)/python benchmarks/bench_variants.py

bench-agora: $(STAMP)  # needs the SST-2 teacher of bench-distill
	$(BIN)/python benchmarks/bench_agora.py --theta-arm

bench-fptas: $(STAMP)  # needs the SST-2 teacher of bench-distill and the search of bench-search
	$(BIN)/python benchmarks/bench_fptas.py --calibrate

bench-latency: $(STAMP)  # confirms the studies of bench-search (runs them first when missing)
	$(BIN)/python benchmarks/bench_latency.py

bench-scale: $(STAMP)  # hours: resumable stage by stage (state in .cache/bench-scale/); run it again to go on
	$(BIN)/python benchmarks/bench_scale.py

bench-students: $(STAMP)  # hours, resumable (.cache/bench-students-all/); uses bench-scale's teacher once it is trained
	$(BIN)/python benchmarks/bench_students.py

bench-qa: $(STAMP)  # many hours on CPU (the teacher alone ~11 h), resumable stage by stage (.cache/bench-qa/)
	$(BIN)/python benchmarks/bench_qa.py

clean:
	rm -rf $(VENV) runs .cache
