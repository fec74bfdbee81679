# cairn — build, test, demo, bench, lint.
GO        ?= go
BIN       := bin/cairn
PKGS      := ./...
TIMEOUT   ?= 1500s
export CGO_ENABLED ?= 0

.PHONY: build test test-vm unit e2e torture fuzz demo bench lint clean install uninstall

# The version cairn --version prints: the git tag or commit this was built from.
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

build:
	$(GO) build -trimpath -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/cairn

# Where 'make install' puts things (DESTDIR is prepended to every path, for packagers and
# tests). systemd units go to $(PREFIX)/lib/systemd/system when PREFIX is /usr or /usr/local
# (both are on systemd's search path); elsewhere set SYSTEMDDIR, or they are left out.
PREFIX      ?= /usr/local
BINDIR      ?= $(PREFIX)/bin
DOCDIR      ?= $(PREFIX)/share/doc/cairn
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR  ?= $(PREFIX)/share/zsh/site-functions
SYSTEMDDIR  ?= $(if $(filter /usr /usr/local,$(PREFIX)),$(PREFIX)/lib/systemd/system)
DOCS        := README.md docs/design.md docs/reliability.md docs/fuse.md docs/benchmarks.md \
               docs/nbd.md docs/lvm.md docs/console.md \
               contrib/config.example.json contrib/systemd/cairn.env.example

# The binary (built with the git version), the docs and examples, bash and zsh completion, and
# the systemd unit rewritten to name the installed binary and docs.
install: build
	install -D -m 0755 $(BIN) $(DESTDIR)$(BINDIR)/cairn
	install -d -m 0755 $(DESTDIR)$(DOCDIR)
	install -m 0644 $(DOCS) $(DESTDIR)$(DOCDIR)/
	install -D -m 0644 contrib/completion/cairn.bash $(DESTDIR)$(BASHCOMPDIR)/cairn
	install -D -m 0644 contrib/completion/_cairn $(DESTDIR)$(ZSHCOMPDIR)/_cairn
ifneq ($(SYSTEMDDIR),)
	install -d -m 0755 $(DESTDIR)$(SYSTEMDDIR)
	sed -e 's|/usr/bin/cairn|$(BINDIR)/cairn|g' -e 's|/usr/share/doc/cairn|$(DOCDIR)|g' \
	    contrib/systemd/cairn.service > $(DESTDIR)$(SYSTEMDDIR)/cairn.service
	chmod 0644 $(DESTDIR)$(SYSTEMDDIR)/cairn.service
endif

# Removes exactly what install put there (the shared directories stay).
uninstall:
	rm -f $(DESTDIR)$(BINDIR)/cairn $(DESTDIR)$(BASHCOMPDIR)/cairn $(DESTDIR)$(ZSHCOMPDIR)/_cairn
	rm -f $(addprefix $(DESTDIR)$(DOCDIR)/,$(notdir $(DOCS)))
	-rmdir $(DESTDIR)$(DOCDIR) 2>/dev/null
ifneq ($(SYSTEMDDIR),)
	rm -f $(DESTDIR)$(SYSTEMDDIR)/cairn.service
endif

# Unit and integration tests (real loop devices, FUSE, Badger and versitygw; see tests/).
# -race on everything; a second leg with one P per test binary (-cpu 1: GOMAXPROCS=1 for the
# tests, while the go command still builds and runs two packages at once) shakes out ordering
# assumptions; it builds as make build does (-trimpath, no cgo), so make build's compiled
# packages are reused. The e2e tests that mostly wait (timers, child processes, servers) are
# marked parallel; -parallel 4 lets four of them wait at once on two cores.
# The go command starts packages in the order given, two at once: the longest go first
# (tests/, then repo and gateway), so the rest run beside them. In ./...'s order tests/ came
# after repo/..., began 4 min 18 s in, and ended the leg alone (852 s, where tests/ takes 610).
# The -cpu 1 leg runs beside the race leg, which is tests/ waiting on its children most of the
# time (CI used 73 % of two cores with the legs one after the other); its output follows the
# race leg's.
SLOWPKGS := ./tests/ ./repo/ ./gateway/
# Both legs run with -json through contrib/testreport, which prints what go test without -v
# would (ok and FAIL lines, the output of failed tests) and then each leg's slowest tests and
# packages: what keeping CI inside its budget needs to know. A leg fails when go test or the
# report says so.
test: build
	@tmp=$$(mktemp -d); \
	$(GO) build -o $$tmp/testreport ./contrib/testreport || { rm -rf $$tmp; exit 1; }; \
	{ $(GO) test -json -trimpath -count=1 -cpu 1 -timeout $(TIMEOUT) ./repo/ ./gateway/ ./repo/... ./index/... ./gateway/... 2>&1; echo $$? >$$tmp/cpu1.rc; } \
		| $$tmp/testreport -slowest 5 >$$tmp/cpu1.out 2>&1 & \
	pid=$$!; \
	echo "$(GO) test -race -count=1 -parallel 4 -timeout $(TIMEOUT) $(SLOWPKGS) $(PKGS)   (the -cpu 1 leg beside it)"; \
	{ CGO_ENABLED=1 $(GO) test -json -race -count=1 -parallel 4 -timeout $(TIMEOUT) $(SLOWPKGS) $(PKGS) 2>&1; echo $$? >$$tmp/race.rc; } \
		| $$tmp/testreport -slowest 25; report=$$?; \
	race=$$(cat $$tmp/race.rc); [ $$report = 0 ] || race=1; \
	wait $$pid; cpu1=$$?; [ "$$(cat $$tmp/cpu1.rc)" = 0 ] || cpu1=1; \
	echo "== the -cpu 1 leg (GOMAXPROCS=1, no -race)"; cat $$tmp/cpu1.out; rm -rf $$tmp; \
	[ $$race = 0 ] || { echo "make test: the race leg failed"; exit 1; }; \
	[ $$cpu1 = 0 ] || { echo "make test: the -cpu 1 leg failed"; exit 1; }

unit:
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout $(TIMEOUT) $$($(GO) list ./... | grep -v /tests)

e2e: build
	$(GO) test -count=1 -timeout $(TIMEOUT) ./tests/...

# Crash trials (tests/torture_test.go): SIGKILL at random points of backup, incremental,
# restore, delete, gc and rebuild-index, CAIRN_TORTURE_TRIALS of each; after every kill the next
# command must recover, check --read-data be clean and every backup restore byte-exact. Then
# the same with two gateways (state dirs) on one repository, an operation on each at once, on
# a local repository and on S3 (tests/torture_gateways_test.go). Each prints its seed and a
# summary table; CAIRN_TORTURE_SEED=N replays a run. ('make test' runs 3 trials of each.)
CAIRN_TORTURE_TRIALS ?= 20
torture:
	CAIRN_TORTURE_TRIALS=$(CAIRN_TORTURE_TRIALS) $(GO) test -count=1 -timeout 60m -run '^TestTorture(TwoGateways(S3)?)?$$' -v ./tests/

# Every fuzz target (decoders of repository and wire data) for FUZZTIME each; found inputs land in
# the package's testdata/fuzz and become regression seeds. contrib/fuzz.sh says how Go's own
# -fuzztime deadline race is told from a finding.
FUZZTIME ?= 5s
FUZZPARALLEL ?= $(shell nproc)
FUZZLANES ?= 1
fuzz:
	./contrib/fuzz.sh $(FUZZTIME) $(FUZZPARALLEL) $(GO) $(FUZZLANES)

# Builds, makes a small sample volume, backs it up (full + incremental), restores both,
# checks them by sha256 and prints the backup table. Uses a scratch repository.
demo: build
	CAIRN=$(abspath $(BIN)) ./contrib/demo.sh

bench: build
	./contrib/bench/run.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) vet -tags vmtest ./tests/vm/
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 $(PKGS)
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 -tags vmtest ./tests/vm/

clean:
	rm -rf bin .bench

# The device-mapper and LVM tests (tests/vm): Debian's kernel booted under qemu (TCG) with an
# initramfs of busybox, lvm2, thin-provisioning-tools, e2fsprogs and cairn. A few minutes.
test-vm:
	$(GO) test -tags vmtest -count=1 -timeout 20m -v ./tests/vm/
