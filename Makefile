# enclavekit — see README.md. Everything here needs only Go, gcc, make and git.
GO        ?= go
FUZZTIME  ?= 30s
BENCHTIME ?= 1s
BENCH     ?= .
SOAKTIME  ?= 60s
PKGS      ?= ./...
# FUZZ_EXHAUSTIVE=0 leaves out make fuzz's exhaustive mutation tests (minutes).
FUZZ_EXHAUSTIVE ?= 1

PREFIX    ?= /usr/local

.PHONY: all dev test vet vet-bench fmt-check fuzz bench bench-report soak tidy clean install

all: test

## dev: run the whole system on loopback (emulated NSM) and a scripted client session.
dev:
	@echo "make dev: building enclavekit (the first build compiles every module, about half a minute), then running it"
	$(GO) run ./cmd/enclavekit dev

## test: what CI runs — formatting, vet, and every test under the race detector;
## the bench module (bench/) is vetted and its report tool runs once with tiny samples
## (a smoke test of make bench-report; no figure is checked).
test: fmt-check vet vet-bench
	$(GO) test -race -count=1 $(PKGS)
	cd deploy/kubernetes/manifesttest && $(GO) vet -mod=mod ./... && $(GO) test -mod=mod -race -count=1 ./...

vet-bench:
	cd bench && $(GO) vet ./... && $(GO) test -count=1 ./...

vet:
	$(GO) vet $(PKGS)

fmt-check:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

## fuzz: run every Fuzz target for FUZZTIME each (default 30s), and the
## exhaustive mutation tests (every byte of the real KMS sample, all 255 changes).
fuzz:
	$(if $(filter 1,$(FUZZ_EXHAUSTIVE)),ENCLAVEKIT_EXHAUSTIVE=1 $(GO) test -count=1 -run 'EverySingleByteChange' ./enclave/kms/internal/cms/,@echo "fuzz: exhaustive mutation tests left out (FUZZ_EXHAUSTIVE=0)")
	@set -e; for pkg in $$($(GO) list $(PKGS)); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$f ($(FUZZTIME))"; \
	    $(GO) test -run='^$$' -fuzz="^$$f$$" -fuzztime=$(FUZZTIME) $$pkg; \
	  done; \
	done

## bench: run the benchmarks (BENCH=regexp, BENCHTIME=1s); compare runs with benchstat.
bench:
	$(GO) test -run='^$$' -bench='$(BENCH)' -benchmem -benchtime=$(BENCHTIME) $(PKGS)

## bench-report: side-by-side benchmarks (enclavekit vs HAProxy, socat, gRPC-go,
## net/http, raw TCP) written to docs/benchmarks.md and docs/bench/*.svg.
## Installs Debian's socat and haproxy with apt-get when they are missing and it
## can; otherwise the report skips those columns and says why.
## BENCH_ROUNDS (default 5) interleaved rounds; BENCH_SAMPLE (default 1s) per figure.
BENCH_ROUNDS ?= 5
BENCH_SAMPLE ?= 1s
bench-report:
	@missing=""; for p in socat haproxy; do command -v $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "bench-report: installing$$missing with apt-get (Debian packages)"; \
	    apt-get install -y$$missing >/dev/null || { apt-get update >/dev/null && apt-get install -y$$missing >/dev/null; } || \
	      echo "bench-report: could not install$$missing; the report will skip them"; \
	  else \
	    echo "bench-report:$$missing not installed and apt-get is not usable as root here; the report will skip them"; \
	  fi; \
	fi
	cd bench && $(GO) run ./cmd/benchreport -rounds $(BENCH_ROUNDS) -sample $(BENCH_SAMPLE) -out ../docs

## soak: load the system on loopback for SOAKTIME (default 60s) and check it holds; see docs/soak.md.
soak:
	$(GO) run ./cmd/enclavekit soak --duration $(SOAKTIME)

## install: build enclavekit (for the parent) and enclaved into $(PREFIX)/bin,
## stamped with the commit's version. The enclave's own enclaved is built by
## make enclaved (reproducible, static) and goes into the EIF.
install:
	@mkdir -p $(DESTDIR)$(PREFIX)/bin
	$(GO) build -ldflags='-X github.com/enclavekit/enclavekit/enclave.Version=$(ENCLAVE_VERSION)' -o $(DESTDIR)$(PREFIX)/bin/enclavekit ./cmd/enclavekit
	$(GO) build -ldflags='-X github.com/enclavekit/enclavekit/enclave.Version=$(ENCLAVE_VERSION)' -o $(DESTDIR)$(PREFIX)/bin/enclaved ./cmd/enclaved
	@echo "installed $(DESTDIR)$(PREFIX)/bin/enclavekit and enclaved; systemd units and config templates are in deploy/ (docs/deploy.md)"

tidy:
	$(GO) mod tidy

clean:
	$(GO) clean -testcache

# Build targets (enclaved, repro-check, eif) live beside the Dockerfile.
-include build/build.mk
