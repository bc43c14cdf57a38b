# smprelay — build, run and test the SMP relay.
#
#   make run    build smp-server and start it on 127.0.0.1:5223 with ./data
#   make test   go vet, then every test (with the race detector when cgo works)

GO      ?= go
BIN     := bin
LISTEN  ?= 127.0.0.1:5223
DATA    ?= ./data

# The race detector needs cgo and a C compiler; without them the tests still run, without -race.
RACE := $(shell [ "$$($(GO) env CGO_ENABLED)" = 1 ] && command -v "$$($(GO) env CC)" >/dev/null 2>&1 && echo -race)

.PHONY: all build run test vet clean

all: build

build:
	$(GO) build -o $(BIN)/smp-server ./cmd/smp-server

run: build
	$(BIN)/smp-server start --data $(DATA) --listen $(LISTEN)

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { gofmt -l .; echo "gofmt: files above need formatting"; exit 1; }

test: vet
	@[ -n "$(RACE)" ] || echo "note: cgo or a C compiler is missing, so tests run without -race"
	$(GO) test $(RACE) -count=1 -timeout 15m ./...

clean:
	rm -rf $(BIN)
