# ocfcloud — make help lists the targets.
GO       ?= go
BIN      ?= bin/ocfcloud
DATA_DIR ?= data
ARGS     ?=
# Flags for `ocfcloud bench all`, e.g. BENCH_ARGS="--soak-duration 10m" or "--only c2c,token".
BENCH_ARGS ?=

.PHONY: help build run test cluster-test lint fuzz bench clean

help: ## Show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-8s %s\n", $$1, $$2}'

build: ## Build bin/ocfcloud
	$(GO) build -o $(BIN) ./cmd/ocfcloud

run: build ## Run every service with embedded NATS and FerretDB (data in ./data)
	$(BIN) serve --data-dir $(DATA_DIR) $(ARGS)

test: ## go vet, then every test with the race detector
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 15m ./...

# Fleet sizes of cluster-test. Issue 11 asks for 1,000 devices; onboarding
# them takes 1-2.5 min on 2 cores (authz keeps onboarding codes in the
# database), so CI runs 500 in each test to stay within ~6 minutes.
KILL9_DEVICES ?= 500
SOAK_DEVICES  ?= 500

cluster-test: ## Separate processes on 127.0.0.x: 3-node NATS cluster, database, 2 gateways, 2 APIs; kills some; kill -9 under load; 2-min soak
	mkdir -p $(CURDIR)/test-output
	$(GO) test -tags cluster -count=1 -timeout 15m -v -artifacts -outputdir $(CURDIR)/test-output ./test/cluster \
	  -kill9-devices $(KILL9_DEVICES) -soak-devices $(SOAK_DEVICES)

lint: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

fuzz: ## Run each fuzz target for 20 s
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime 20s $$pkg || exit 1; \
	  done; \
	done

bench: build ## Run every benchmark, one after the other (about 15 min; keep the machine idle), and rewrite docs/BENCHMARKS.md
	$(BIN) bench all --go "$(GO)" --out docs/BENCHMARKS.md $(BENCH_ARGS)

clean: ## Remove bin/ (keeps ./data)
	rm -rf bin
