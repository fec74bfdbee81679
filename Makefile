# cairn — build, test, demo, bench, lint.
GO        ?= go
BIN       := bin/cairn
PKGS      := ./...
TIMEOUT   ?= 900s
export CGO_ENABLED ?= 0

.PHONY: build test unit e2e torture fuzz demo bench lint clean

# The version cairn --version prints: the git tag or commit this was built from.
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

build:
	$(GO) build -trimpath -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/cairn

# Unit and integration tests (real loop devices, FUSE, Badger and versitygw; see tests/).
# -race on everything; a second leg with GOMAXPROCS=1 shakes out ordering assumptions.
test: build
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout $(TIMEOUT) $(PKGS)
	GOMAXPROCS=1 $(GO) test -count=1 -timeout $(TIMEOUT) ./repo/... ./index/... ./gateway/...

unit:
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout $(TIMEOUT) $$($(GO) list ./... | grep -v /tests)

e2e: build
	$(GO) test -count=1 -timeout $(TIMEOUT) ./tests/...

# Crash trials (tests/torture_test.go): SIGKILL at random points of backup, incremental,
# restore, delete, gc and rebuild-index, CAIRN_TORTURE_TRIALS of each; after every kill the next
# command must recover, check --read-data be clean and every backup restore byte-exact. It
# prints its seed and a summary table; CAIRN_TORTURE_SEED=N replays a run. ('make test' runs
# 3 trials of each.)
CAIRN_TORTURE_TRIALS ?= 20
torture:
	CAIRN_TORTURE_TRIALS=$(CAIRN_TORTURE_TRIALS) $(GO) test -count=1 -timeout 60m -run '^TestTorture$$' -v ./tests/

# Every fuzz target (decoders of repository and wire data) for FUZZTIME each; found inputs land in
# the package's testdata/fuzz and become regression seeds.
FUZZTIME ?= 5s
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for fz in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "fuzz $$pkg $$fz ($(FUZZTIME))"; \
	    $(GO) test -run XXX -fuzz "^$$fz\$$" -fuzztime $(FUZZTIME) $$pkg >/dev/null || { $(GO) test -run XXX -fuzz "^$$fz\$$" -fuzztime 1x $$pkg; exit 1; }; \
	  done; \
	done

# Builds, makes a small sample volume, backs it up (full + incremental), restores both,
# checks them by sha256 and prints the backup table. Uses a scratch repository.
demo: build
	./contrib/demo.sh

bench: build
	./contrib/bench/run.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 $(PKGS)

clean:
	rm -rf bin .bench
