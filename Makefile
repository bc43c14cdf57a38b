# smprelay — build, run and test the SMP relay.
#
#   make run    build smp-server and start it on 127.0.0.1:5223 with ./data
#   make build  smp-server and smp in ./bin, with the commit they were built from
#   make install     make build, then copy both into $(PREFIX)/bin (PREFIX=/usr/local)
#   make test   go vet and staticcheck, then every test (with the race detector when cgo works);
#               the crash test runs its short form (3 kill -9 cycles)
#   make crash-test  the long crash test: 25 kill -9 cycles against the real binary
#   make bench       the relay's capacity on this machine (go run ./bench; under 10 minutes on
#                    2 cores), smp-server pinned to half the cores and the load generator to the
#                    rest (BENCHFLAGS=--pin=false shares them): JSON, Markdown and SVG charts in
#                    bench/results (gitignored; the committed reference run is in bench/reference)
#   make bench-quick the same, short (under a minute)
#   make bench-hostile  an honest client's latency under each attack of issue 12, one at a
#                    time against the real relay (about 3 minutes on 2 cores); BENCHFLAGS adds flags,
#                    e.g. BENCHFLAGS='--hostile-duration 4s --server-args "--fsync never"'
#   make bench-wal   write-ahead log figures: compression, append rate per fsync mode,
#                    the relay end to end per fsync mode, restart of 1M queues + 1M messages
#   make bench-contacts  one contact (client.Contact) on 1, 2 and 3 relays, each its own smp-server
#                    (issue 17; about 40 s on 2 cores): msg/s shown to the receiver, send -> shown
#                    p50/p99, relay and client CPU per message; BENCHFLAGS='--contact-relays 1,2,3,4' adds points
#   make bench-storage  issue 14's memory and restart bounds (a few minutes on 2 cores): RSS against
#                    160,000 stored 7,168-byte messages in 256 queues and against 100,000 empty queues
#                    (bytes per message and per queue, SVG charts), restart time against an empty
#                    relay's, then a cold read of every message (msg/s, cache hit rate), with
#                    --store disk; BENCHFLAGS='--storage-store wal' measures another store. The
#                    README's large restart case (1M queues + 4M small messages, not run by default):
#                    BENCHFLAGS='--scenarios storage-queues --storage-queue-count 1000000 --storage-queue-messages 4000000'

GO      ?= go
BIN     ?= bin
LISTEN  ?= 127.0.0.1:5223
DATA    ?= ./data
PREFIX  ?= /usr/local

# The commit the binaries come from ("-dirty" when the tree has changes), passed
# by -ldflags: the go command stamps it only with VCS stamping on, and
# GOFLAGS=-buildvcs=false (set on some machines) turns that off.
REVISION := $(shell git rev-parse HEAD 2>/dev/null)$(shell git diff --quiet HEAD -- 2>/dev/null || echo -dirty)
LDFLAGS  := $(if $(REVISION),-X main.revision=$(REVISION))

# The race detector needs cgo and a C compiler; without them the tests still run, without -race.
RACE := $(shell [ "$$($(GO) env CGO_ENABLED)" = 1 ] && command -v "$$($(GO) env CC)" >/dev/null 2>&1 && echo -race)

# Cycles of make crash-test (at least 20 for the figure docs/performance.md quotes).
CRASH_CYCLES ?= 25

.PHONY: all build install run test vet clean fuzz crash-test bench bench-quick bench-hostile bench-wal bench-storage bench-contacts

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/smp-server ./cmd/smp-server
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/smp ./cmd/smp

install: build
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(BIN)/smp-server $(BIN)/smp $(DESTDIR)$(PREFIX)/bin/

run: build
	$(BIN)/smp-server start --data $(DATA) --listen $(LISTEN)

# staticcheck is pinned and fetched by the go command, so a fresh machine needs
# nothing installed for it.
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

vet:
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { gofmt -l .; echo "gofmt: files above need formatting"; exit 1; }

test: vet
	@[ -n "$(RACE)" ] || echo "note: cgo or a C compiler is missing, so tests run without -race"
	$(GO) test $(RACE) -count=1 -timeout 15m ./...
	@# The race detector allocates, so these skip under -race: run them without it too.
	$(GO) test -count=1 -run 'Alloc' ./engine ./codec ./bodylog

crash-test:
	$(GO) test $(RACE) -count=1 -timeout 60m -run TestCrashRecovery -v ./cmd/smp-server -crash.cycles $(CRASH_CYCLES)

bench:
	$(GO) run ./bench $(BENCHFLAGS)

bench-quick:
	$(GO) run ./bench --quick $(BENCHFLAGS)

bench-hostile:
	$(GO) run ./bench --scenarios hostile $(BENCHFLAGS)

bench-storage:
	$(GO) run ./bench --scenarios storage-messages,storage-queues $(BENCHFLAGS)

bench-contacts:
	$(GO) run ./bench --scenarios contacts $(BENCHFLAGS)

bench-wal:
	$(GO) test ./wal -run XXX -bench 'Compression|Append' -benchtime 2000x
	$(GO) test ./cmd/smp-server -run XXX -bench ServerFsync -benchtime 4000x
	$(GO) test ./wal -run TestRestartMillion -wal.million -v -timeout 60m

clean:
	rm -rf $(BIN)

# Every fuzz target for FUZZTIME each (default 60s); CI runs their seed corpora in make test.
fuzz:
	FUZZTIME=$(or $(FUZZTIME),60s) bash fuzz/run.sh
