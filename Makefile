# cardguard — build, run and test.
#
#   make run    build cardguard and a local VictoriaMetrics, start both
#   make test   build the pinned test binaries, then run every unit and integration test

GO        ?= go
BIN       := .cache/bin
VM_BIN    := $(BIN)/victoria-metrics
VMAGENT   := $(BIN)/vmagent
VMALERT   := $(BIN)/vmalert
TOOLS_MOD := tools/vm/go.mod
PROM_BIN  := $(BIN)/prometheus
PROM_MOD  := tools/prometheus/go.mod
STATICCHECK := v0.6.1

.PHONY: all build tools test test-short vet run bench clean fuzz

all: build

build:
	$(GO) build -o bin/cardguard ./cmd/cardguard

# Test binaries (victoria-metrics, vmagent, vmalert, prometheus) are built from the Go module proxy at the versions pinned in tools/
# and cached under .cache/ (git-ignored): a second run rebuilds nothing.
tools: $(VM_BIN) $(VMAGENT) $(VMALERT) $(PROM_BIN)

$(VM_BIN): $(TOOLS_MOD)
	@mkdir -p $(BIN)
	cd tools/vm && $(GO) build -o $(CURDIR)/$(VM_BIN) github.com/VictoriaMetrics/VictoriaMetrics/app/victoria-metrics

$(VMAGENT): $(TOOLS_MOD)
	@mkdir -p $(BIN)
	cd tools/vm && $(GO) build -o $(CURDIR)/$(VMAGENT) github.com/VictoriaMetrics/VictoriaMetrics/app/vmagent

# vmalert evaluating rules against VictoriaMetrics directly: the reader that
# bypasses cardguard in the recommendations' end-to-end test.
$(VMALERT): $(TOOLS_MOD)
	@mkdir -p $(BIN)
	cd tools/vm && $(GO) build -o $(CURDIR)/$(VMALERT) github.com/VictoriaMetrics/VictoriaMetrics/app/vmalert

# Prometheus at the version the main module requires, for the end-to-end tests of
# remote write (retries through a VictoriaMetrics outage, remote write 2.0).
$(PROM_BIN): $(PROM_MOD)
	@mkdir -p $(BIN)
	cd tools/prometheus && $(GO) build -o $(CURDIR)/$(PROM_BIN) github.com/prometheus/prometheus/cmd/prometheus

vet:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); echo 'gofmt: files above need formatting'; exit 1)
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK) ./...

test: tools vet
	$(GO) test -count=1 -timeout 20m ./...
	$(MAKE) --no-print-directory fuzz

# Every fuzz target runs FUZZTIME on top of its seed corpus; inputs that fail
# are written under testdata/fuzz/ and become regression tests once committed.
# A count rather than a duration: with a duration, Go 1.26's fuzzing coordinator
# can fail a target with a bare "context deadline exceeded" when time runs out
# while a worker is busy (golang/go#75804, fixed in Go 1.27), which is no finding.
FUZZTIME ?= 50000x
# FuzzDecodeMemory measures the heap around every input (a GC each time): it
# runs 100-800 inputs a second where the others run thousands, so it gets fewer.
FUZZTIME_MEMORY ?= 10000x
fuzz:
	@for pkg in $$(grep -rl --include='*_test.go' '^func Fuzz' internal cmd | xargs -n1 dirname | sort -u); do \
		for f in $$(grep -h '^func Fuzz' $$pkg/*_test.go | sed 's/func \(Fuzz[A-Za-z0-9_]*\).*/\1/'); do \
			n=$(FUZZTIME); [ "$$f" = FuzzDecodeMemory ] && n=$(FUZZTIME_MEMORY); \
			echo "fuzz $$pkg $$f ($$n)"; \
			$(GO) test -run '^$$' -fuzz "^$$f\$$" -fuzztime $$n ./$$pkg || exit 1; \
		done; \
	done

test-short:
	$(GO) test -short ./...

# The embedded default: a local VictoriaMetrics started by cardguard itself, state
# in memory with snapshots under ./cardguard-data.
run: build tools
	./bin/cardguard -vm.binary=$(VM_BIN) -dataDir=cardguard-data

# Remote write direct / through vmagent / through cardguard on identical payloads,
# twice (the second time in reverse order), then vmagent and cardguard each
# aggregating 10% of the series, then the three targets taking the same series
# over OTLP/HTTP, then direct and cardguard into a VictoriaMetrics cluster (the
# binaries in ../shared/vm-cluster), then the query path; rewrites its section of
# BENCHMARKS.md (about 15 minutes, not part of test or CI). Extra flags: make bench BENCH_FLAGS='-note="quiet machine"'
bench: build $(VM_BIN) $(VMAGENT)
	$(GO) build -o $(BIN)/loadgen ./e2e/loadgen
	$(GO) run ./e2e/bench $(BENCH_FLAGS)

# cardguard's memory with 1M active series; separate because creating a million
# series in VictoriaMetrics takes minutes on a small machine.
.PHONY: bench-memory
bench-memory: build $(VM_BIN) $(VMAGENT)
	$(GO) build -o $(BIN)/loadgen ./e2e/loadgen
	$(GO) run ./e2e/bench -memory $(BENCH_FLAGS)

# Two tenants on one VictoriaMetrics: tenant B's query latency with tenant A idle and
# with A at 10x its read limits, through cardguard and direct, with VictoriaMetrics'
# defaults and with -search.maxWorkersPerQuery=1; rewrites its section of
# BENCHMARKS.md (about 8 minutes, not part of test or CI).
.PHONY: bench-readlimits
bench-readlimits: build $(VM_BIN)
	$(GO) run ./e2e/bench -readlimits $(BENCH_FLAGS)

# The same active series (1M) through 1, 2 and 3 cardguard replicas sharing one Redis
# (redis-server from PATH): heap and RSS per replica, Redis bytes per series, CPU per
# sample against VictoriaMetrics'; rewrites its section of BENCHMARKS.md (not part of
# test or CI). A quick try: make bench-scale BENCH_FLAGS=-scale.series=100000
.PHONY: bench-scale
bench-scale: build $(VM_BIN)
	$(GO) build -o $(BIN)/loadgen ./e2e/loadgen
	$(GO) run ./e2e/bench -scale $(BENCH_FLAGS)

clean:
	rm -rf bin .cache
