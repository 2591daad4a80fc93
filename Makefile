# riverflink: `make demo` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
BENCH_STAMP := $(VENV)/.bench-stamp
JARS   := .riverflink/jars/flink-connector-kafka.jar

.PHONY: demo test unit bench java clean

demo: $(STAMP) $(JARS) java
	$(VENV)/bin/riverflink demo

test: $(STAMP) $(JARS) java
	$(PY) -m pytest -q -rs

unit: $(STAMP)
	$(PY) -m pytest -q -m "not integration"

bench: $(STAMP) $(BENCH_STAMP) $(JARS) java
	$(PY) -m bench.throughput
	$(PY) -m bench.sync
	$(PY) -m bench.batch_mode
	$(PY) -m bench.merge_policies
	$(PY) -m bench.freshness
	$(PY) -m bench.serving
	$(PY) -m bench.sharded
	$(PY) -m bench.trees
	$(PY) -m bench.reco

java:
	@command -v java >/dev/null 2>&1 || { echo "error: Java not found; riverflink needs a Java 17 runtime (e.g. apt-get install openjdk-17-jdk-headless)" >&2; exit 1; }
	@java -version 2>&1 | head -1 | grep -Eq '"(1[1-9]|[2-9][0-9])[."]' || { echo "error: riverflink needs Java 17; found: $$(java -version 2>&1 | head -1)" >&2; exit 1; }

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if (3, 10) <= sys.version_info[:2] < (3, 12) else "error: riverflink needs Python 3.10 or 3.11 (apache-flink wheels)")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $(BENCH_STAMP)

$(JARS): $(STAMP) pipelines/jars.py $(shell find pipelines/java pipelines/java-loopback -type f)
	$(PY) -m riverflink.pipelines.jars fetch

clean:
	rm -rf $(VENV) .riverflink
