# Every target runs inside .venv, which `make install` creates; `make run` and `make test` create it on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROTOS := $(wildcard protos/dataservice/v1/*.proto)
STUBS_OUT := clients/python
PG15_URL ?= postgresql://postgres@127.0.0.1:5432/test
MACHINE_REDIS_URL ?= redis://127.0.0.1:6379/0

.PHONY: all install run test unit-tests pg15-tests lint stubs check-stubs bench clean

all: lint test

$(VENV)/.installed: pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ./clients/python -e '.[dev]'
	touch $@

install: $(VENV)/.installed

## run: serve on [::]:50051 over the embedded PostgreSQL (or DATABASE_URL) — the one command for a fresh machine
run: install
	$(PY) -m server

## test: lint, stub drift, then the suite on embedded PostgreSQL 18 + pgvector and again on the machine's PostgreSQL 15
test: lint check-stubs unit-tests pg15-tests

unit-tests: install
	$(PY) -m pytest -q -m "not without_pgvector" tests

pg15-tests: install
	TEST_DATABASE_URL=$(PG15_URL) TEST_REDIS_URL=$(MACHINE_REDIS_URL) $(PY) -m pytest -q -m "not pgvector" tests

lint: install
	cd protos && ../$(VENV)/bin/buf lint
	$(VENV)/bin/hadolint Dockerfile
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml

## stubs: regenerate the shipped Python client stubs from the protos
stubs: install
	$(PY) -m grpc_tools.protoc -Iprotos \
		--python_out=$(STUBS_OUT) --pyi_out=$(STUBS_OUT) --grpc_python_out=$(STUBS_OUT) \
		--plugin=protoc-gen-mypy_grpc=$(VENV)/bin/protoc-gen-mypy_grpc --mypy_grpc_out=$(STUBS_OUT) \
		$(PROTOS)

## check-stubs: fail when the committed stubs differ from what the protos generate
check-stubs: stubs
	@git diff --exit-code --stat -- $(STUBS_OUT) || { echo "client stubs are out of date: run 'make stubs' and commit"; exit 1; }
	@test -z "$$(git status --porcelain --untracked-files=all -- $(STUBS_OUT))" || { echo "new client stubs are not committed: run 'make stubs' and commit"; git status --porcelain -- $(STUBS_OUT); exit 1; }

bench: install
	$(PY) -m bench

clean:
	rm -rf $(VENV) .data build *.egg-info
