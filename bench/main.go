package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pkg/profile"
	"github.com/smprelay/smprelay/client"
	"github.com/smprelay/smprelay/codec"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "worker" {
		os.Exit(workerMain(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == "honest" {
		os.Exit(honestMain(os.Args[2:]))
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// allScenarios are the scenarios of the default suite, in the order they run.
var allScenarios = []string{"crypto-limit", "relay-signed", "relay-unsigned", "handshakes", "idle-connections", "fsync"}

// knownScenarios adds the ones that run only when asked for: hostile
// measures attacks, not capacity (make bench-hostile), and the storage
// scenarios fill gigabytes for minutes (make bench-storage).
var knownScenarios = append(slices.Clone(allScenarios), "hostile", "storage-messages", "storage-queues", "contacts")

// defaultOut is where fresh runs go, relative to the directory make runs in
// (the repository root). .gitignore lists it, so runs leave no untracked
// files; the committed reference runs live in bench/reference.
const defaultOut = "bench/results"

// config is what the flags say.
type config struct {
	scenarios     []string
	quick         bool
	duration      time.Duration
	warmup        time.Duration
	cryptoTime    time.Duration
	pairs         []int
	rsaPairs      []int
	queues        int
	window        int
	body          int
	keys          []string
	halfPeak      bool
	rate          float64
	fsyncModes    []string
	fsyncPairs    int
	kems          []string
	dialers       int
	hsDuration    time.Duration
	idleSteps     []int
	idleSample    int
	idleKEM       string
	serverArgs    []string
	serverProfile string
	profile       string
	out           string
	serverBin     string
	pin           bool

	hostileDuration time.Duration
	hostileAttacks  []string
	hostileKEMs     []string
	hostileMaxConns int
	hostileRate     float64
	hostileDialers  int
	// hostileHonestProc runs the honest client in its own process.
	hostileHonestProc bool

	// The storage scenarios (storage.go).
	storageStore         string // --store of their relays
	storageMessages      int    // storage-messages: messages stored
	storageBody          int    // storage-messages: body bytes of each
	storageMsgQueues     int    // storage-messages: queues they are spread over
	storageQueues        int    // storage-queues: queues made
	storageQueueSecure   bool   // storage-queues: KEY after each NEW
	storageQueueMsgs     int    // storage-queues: messages sent after the queues (the large restart case)
	storageQueueBody     int    // storage-queues: body bytes of each
	storageSteps         int    // readings per fill or creation
	storageConns         int    // client connections of a fill, creation or drain
	storageInflight      int    // commands in flight over them
	storageEmptyRestarts int    // restarts of the empty reference relay
	storageMetrics       bool   // start the relays with --metrics-listen, for the cache counters and the Go heap
	// hostileRebaseline measures the baseline again after each attack.
	hostileRebaseline bool

	// The contacts scenario (contacts.go).
	contactRelays   []int         // relays of each point
	contactDuration time.Duration // measured time of each point
	contactWarmup   time.Duration // unmeasured time before it
	contactWindow   int           // messages sent and not yet shown
}

const usageText = `bench drives the real smp-server over loopback and reports what one machine can serve,
against this machine's cryptographic limit.

Usage:
  go run ./bench [flags]          the standard suite (make bench; under 10 minutes on 2 cores)
  go run ./bench --quick [flags]  the short suite (make bench-quick; under a minute)

Scenarios (--scenarios, comma-separated, in this order):
  crypto-limit      in-process per-core cost of Ed25519/RSA-2048 PSS verification, AES-256-GCM per
                    block, client-hello open per KEM kind; the message and handshake limits they imply
  relay-signed      secured queues, SEND -> MSG -> ACK over --pairs (Ed25519) and --rsa-pairs (RSA-2048),
                    pre-signed; then a paced run at half of the Ed25519 peak for its p99
  relay-unsigned    the same before KEY: unsigned SENDs (ACK is still signed by RK)
  handshakes        new connections per second for each --kems kind
  idle-connections  subscribed idle connections in --idle-steps; server RSS per connection
  fsync             relay-signed (Ed25519, --fsync-pairs pairs) under each --fsync-modes mode
  hostile           not in the default suite (make bench-hostile): a baseline, then each of --hostile-attacks
                    alone for --hostile-duration while an honest client measures dial, SEND -> MSG and
                    full-cycle latency; per attack the ratio to the baseline, relay CPU and RSS, the
                    attacker's rate and whether the relay stayed up
  storage-messages  not in the default suite (make bench-storage): --storage-messages bodies of --storage-body
                    bytes into --storage-msg-queues secured queues, relay RSS after each of --storage-steps
                    steps (bytes per stored message), then a restart on the same data directory (time to
                    listening against an empty relay's, RSS) and a cold read of every message (msg/s, cache
                    hit rate from the metrics endpoint); the relays get --store <--storage-store>
  contacts          not in the default suite (make bench-contacts): one contact (client.Contact) on each of
                    --contact-relays relay counts, each relay its own smp-server; Bob sends to Alice with
                    --contact-window messages in flight for --contact-duration: msg/s shown, send -> shown
                    p50/p99, relay CPU (all relays) and client CPU per message
  storage-queues    not in the default suite (make bench-storage): --storage-queue-count empty queues in steps
                    (bytes per queue), then a restart; --storage-queue-messages adds messages before it, e.g.
                    the large restart case: --storage-queue-count 1000000 --storage-queue-messages 4000000

Pinning (--pin, default on): smp-server runs on the first half of the CPUs this process may use (at least
one; taskset -c style lists in the report), the load generator on the rest (1 + 1 on 2 CPUs), and the relay
points add msg/s per server core against the stdlib crypto limit of one core, and the server's non-crypto
CPU per delivered message. Off with one CPU; --pin=false: server and load generator share every core.

Flags:
`

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	c := &config{}
	fl := flag.NewFlagSet("bench", flag.ContinueOnError)
	fl.SetOutput(stderr)
	fl.Usage = func() {
		fmt.Fprint(stderr, usageText)
		fl.PrintDefaults()
	}
	scen := fl.String("scenarios", strings.Join(allScenarios, ","), "scenarios to run, comma-separated")
	fl.BoolVar(&c.quick, "quick", false, "the short suite: smaller grids and durations (flags given explicitly still win)")
	fl.DurationVar(&c.duration, "duration", 8*time.Second, "measured `time` of each relay point")
	fl.DurationVar(&c.warmup, "warmup", 2*time.Second, "unmeasured `time` before each relay point")
	fl.DurationVar(&c.cryptoTime, "crypto-time", 500*time.Millisecond, "`time` spent timing each crypto operation")
	pairs := fl.String("pairs", "1,4,16,64,256", "connection pairs (sender + recipient) of the Ed25519 grid")
	rsaPairs := fl.String("rsa-pairs", "1,4,16,64", "connection pairs of the RSA-2048 grid (empty: none)")
	fl.IntVar(&c.queues, "queues", 1, "queues per connection pair")
	fl.IntVar(&c.window, "window", 2, "messages per queue in flight (sent, and not yet both answered and delivered) in the closed loop; at most the server's --quota")
	fl.IntVar(&c.body, "body", codec.MaxBody(codec.DefaultBlockSize), "SEND body `bytes` (default maxBody: real clients pad every body to it, SPEC §10)")
	keys := fl.String("keys", "ed25519,rsa", "signature key kinds for relay-signed: ed25519, rsa")
	fl.Float64Var(&c.rate, "rate", 0, "pace every relay point at this many messages/s in all (open loop); 0: closed loop, as fast as it goes")
	fl.BoolVar(&c.halfPeak, "half-peak", true, "after the Ed25519 grid and each fsync point, a paced run at half of its throughput")
	fsyncModes := fl.String("fsync-modes", "always,interval,never", "--fsync modes of the fsync scenario")
	fl.IntVar(&c.fsyncPairs, "fsync-pairs", 16, "connection pairs of the fsync scenario")
	kems := fl.String("kems", "rsa,x25519,mlkem768x25519", "transport key kinds of the handshakes scenario")
	fl.IntVar(&c.dialers, "dialers", 8, "concurrent dialers of the handshakes scenario")
	fl.DurationVar(&c.hsDuration, "handshake-duration", 5*time.Second, "measured `time` per KEM kind")
	idle := fl.String("idle-steps", "1000,5000,10000,max", "connection counts of idle-connections; max = as many as the server's limit permits")
	fl.IntVar(&c.idleSample, "idle-sample", 100, "connections per step that get a message, to prove they are live")
	fl.StringVar(&c.idleKEM, "idle-kem", "mlkem768x25519", "transport key kind of the idle-connections server")
	srvArgs := fl.String("server-args", "", "extra flags for every smp-server start, space-separated (e.g. \"--fsync never\")")
	fl.StringVar(&c.serverProfile, "server-profile", "", "run every server with --profile `kind` (cpu, mem, block, mutex); files go beside the results")
	fl.StringVar(&c.profile, "profile", "", "profile this bench process: cpu, mem, block or mutex (github.com/pkg/profile)")
	fl.StringVar(&c.out, "out", defaultOut, "`directory` for the JSON, Markdown and SVG results; the default is gitignored (the committed reference runs are in bench/reference)")
	fl.BoolVar(&c.pin, "pin", true, "run every smp-server on the first half of this process's CPUs (at least one) and the load generator on the rest, "+
		"so that the per-server-core figures are the server's own; off with one CPU; --pin=false: both share every core")
	fl.StringVar(&c.serverBin, "server-bin", "", "use this smp-server binary instead of building ./cmd/smp-server")
	fl.DurationVar(&c.hostileDuration, "hostile-duration", 8*time.Second, "hostile: `time` of each phase (the baseline and each attack)")
	hAttacks := fl.String("hostile-attacks", strings.Join(attackNames(), ","), "hostile: attacks to run, comma-separated")
	hKEMs := fl.String("hostile-kems", "rsa,x25519,mlkem768x25519", "hostile: relay key types the hello floods run against (a relay each)")
	fl.IntVar(&c.hostileMaxConns, "hostile-max-conns", 1000, "hostile: start the relays with --max-conns `n` (unless --server-args sets it), so the connection attacks can reach it; 0: the relay's own default")
	fl.Float64Var(&c.hostileRate, "hostile-rate", 50, "hostile: honest SEND -> MSG -> ACK cycles per second")
	fl.IntVar(&c.hostileDialers, "hostile-dialers", 32, "hostile: concurrent dialers of the hello floods and conns-held")
	fl.BoolVar(&c.hostileHonestProc, "hostile-honest-process", true, "hostile: run the honest client in a process of its own (bench honest), "+
		"so the attackers cannot starve it inside this one; false: in this process, as the attackers")
	fl.StringVar(&c.storageStore, "storage-store", "disk", "storage scenarios: --store of the relays (disk, wal, memory)")
	fl.IntVar(&c.storageMessages, "storage-messages", 160000, "storage-messages: messages stored")
	fl.IntVar(&c.storageBody, "storage-body", 7168, "storage-messages: body `bytes` of each")
	fl.IntVar(&c.storageMsgQueues, "storage-msg-queues", 256, "storage-messages: queues the messages are spread over, round-robin")
	fl.IntVar(&c.storageQueues, "storage-queue-count", 100000, "storage-queues: queues made")
	fl.BoolVar(&c.storageQueueSecure, "storage-queue-secure", false, "storage-queues: secure each queue (KEY, one sender key for all) after NEW")
	fl.IntVar(&c.storageQueueMsgs, "storage-queue-messages", 0, "storage-queues: messages sent round-robin over the queues after they are made, before the restart (the large restart case: 4000000 over 1000000 queues)")
	fl.IntVar(&c.storageQueueBody, "storage-queue-body", 128, "storage-queues: body `bytes` of those messages")
	fl.IntVar(&c.storageSteps, "storage-steps", 16, "storage scenarios: RSS readings over a fill or a creation")
	fl.IntVar(&c.storageConns, "storage-conns", 8, "storage scenarios: client connections that fill, create or drain")
	fl.IntVar(&c.storageInflight, "storage-inflight", 256, "storage scenarios: commands in flight over those connections (at most 128 per connection)")
	fl.IntVar(&c.storageEmptyRestarts, "storage-empty-restarts", 3, "storage scenarios: restarts of the empty reference relay (the median is the reference)")
	fl.BoolVar(&c.storageMetrics, "storage-metrics", true, "storage scenarios: start the relays with --metrics-listen 127.0.0.1:0 for the cache hit rate and the Go heap")
	fl.BoolVar(&c.hostileRebaseline, "hostile-rebaseline", false, "hostile: measure the baseline again after each attack, once the relay recovered "+
		"(baselineAfter in the report), to tell an attack's effect from a machine that got busier meanwhile")
	contactRelays := fl.String("contact-relays", "1,2,3", "contacts: relays of each point (each a separate smp-server)")
	fl.DurationVar(&c.contactDuration, "contact-duration", 8*time.Second, "contacts: measured `time` of each point")
	fl.DurationVar(&c.contactWarmup, "contact-warmup", 2*time.Second, "contacts: unmeasured `time` before each point")
	fl.IntVar(&c.contactWindow, "contact-window", 8, "contacts: messages sent and not yet shown to the receiver")
	if err := fl.Parse(args); err != nil {
		return nil, err
	}
	if fl.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (flags only; see --help)", fl.Arg(0))
	}
	set := map[string]bool{}
	fl.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if c.quick {
		quick := map[string]string{"duration": "2s", "warmup": "500ms", "crypto-time": "100ms", "pairs": "1,16",
			"rsa-pairs": "16", "fsync-modes": "always,never", "kems": "x25519,mlkem768x25519",
			"handshake-duration": "2s", "idle-steps": "500,2000", "idle-sample": "20", "hostile-duration": "2s",
			"contact-duration": "2s", "contact-warmup": "500ms"}
		for name, v := range quick {
			if !set[name] {
				if err := fl.Set(name, v); err != nil {
					return nil, err
				}
			}
		}
	}
	var err error
	for _, s := range splitList(*scen) {
		if !slices.Contains(knownScenarios, s) {
			return nil, fmt.Errorf("--scenarios: unknown scenario %q (known: %s)", s, strings.Join(knownScenarios, ", "))
		}
		c.scenarios = append(c.scenarios, s)
	}
	c.hostileAttacks, c.hostileKEMs = splitList(*hAttacks), splitList(*hKEMs)
	for _, a := range c.hostileAttacks {
		if !slices.Contains(attackNames(), a) {
			return nil, fmt.Errorf("--hostile-attacks: unknown attack %q (known: %s)", a, strings.Join(attackNames(), ", "))
		}
	}
	switch {
	case c.hostileDuration <= 0 || c.hostileRate <= 0:
		return nil, errors.New("--hostile-duration and --hostile-rate must be positive")
	case c.hostileDialers < 1 || c.hostileMaxConns < 0:
		return nil, errors.New("--hostile-dialers must be at least 1 and --hostile-max-conns at least 0")
	}
	if c.pairs, err = intList("pairs", *pairs, false); err != nil {
		return nil, err
	}
	if c.rsaPairs, err = intList("rsa-pairs", *rsaPairs, false); err != nil {
		return nil, err
	}
	if c.idleSteps, err = intList("idle-steps", *idle, true); err != nil {
		return nil, err
	}
	if c.contactRelays, err = intList("contact-relays", *contactRelays, false); err != nil {
		return nil, err
	}
	if c.contactDuration <= 0 || c.contactWarmup < 0 || c.contactWindow < 1 || c.contactWindow > client.DefaultMaxBacklog {
		return nil, fmt.Errorf("--contact-duration must be positive and --contact-window from 1 to %d", client.DefaultMaxBacklog)
	}
	c.keys, c.fsyncModes, c.kems = splitList(*keys), splitList(*fsyncModes), splitList(*kems)
	for _, k := range c.keys {
		if k != "ed25519" && k != "rsa" {
			return nil, fmt.Errorf("--keys: %q is not ed25519 or rsa", k)
		}
	}
	for _, m := range c.fsyncModes {
		if m != "always" && m != "interval" && m != "never" {
			return nil, fmt.Errorf("--fsync-modes: %q is not always, interval or never", m)
		}
	}
	for _, k := range slices.Concat(c.kems, []string{c.idleKEM}, c.hostileKEMs) {
		if _, err := codec.ParseKEMType(k); err != nil {
			return nil, fmt.Errorf("KEM kind %q: must be rsa, x25519 or mlkem768x25519", k)
		}
	}
	switch {
	case c.duration <= 0 || c.warmup < 0 || c.cryptoTime <= 0 || c.hsDuration <= 0:
		return nil, errors.New("durations must be positive")
	case c.queues < 1 || c.window < 1 || c.window > 128:
		return nil, errors.New("--queues must be at least 1 and --window from 1 to 128")
	case c.body < 4 || c.body > codec.MaxBody(codec.DefaultBlockSize):
		return nil, fmt.Errorf("--body %d: must be from 4 (the slot number) to %d", c.body, codec.MaxBody(codec.DefaultBlockSize))
	case c.rate < 0:
		return nil, errors.New("--rate must be 0 (closed loop) or positive")
	case c.dialers < 1 || c.fsyncPairs < 1 || c.idleSample < 0:
		return nil, errors.New("--dialers and --fsync-pairs must be at least 1, --idle-sample at least 0")
	}
	switch {
	case c.storageMessages < 1 || c.storageMsgQueues < 1 || c.storageQueues < 1 || c.storageQueueMsgs < 0:
		return nil, errors.New("--storage-messages, --storage-msg-queues and --storage-queue-count must be at least 1, --storage-queue-messages at least 0")
	case c.storageBody < 1 || c.storageBody > codec.MaxBody(codec.DefaultBlockSize) || c.storageQueueBody < 1 || c.storageQueueBody > codec.MaxBody(codec.DefaultBlockSize):
		return nil, fmt.Errorf("--storage-body and --storage-queue-body must be from 1 to %d", codec.MaxBody(codec.DefaultBlockSize))
	case c.storageSteps < 1 || c.storageConns < 1 || c.storageInflight < 1 || c.storageEmptyRestarts < 1:
		return nil, errors.New("--storage-steps, --storage-conns, --storage-inflight and --storage-empty-restarts must be at least 1")
	case c.storageInflight > 128*c.storageConns:
		// The relay drops a connection with --max-inbound-blocks (256) blocks
		// waiting as a flood; half of that leaves room.
		return nil, errors.New("--storage-inflight must be at most 128 × --storage-conns")
	case c.storageStore == "":
		return nil, errors.New("--storage-store must name a store")
	}
	c.serverArgs = strings.Fields(*srvArgs)
	if c.serverProfile != "" && !slices.Contains([]string{"cpu", "mem", "block", "mutex"}, c.serverProfile) {
		return nil, fmt.Errorf("--server-profile %q: must be cpu, mem, block or mutex", c.serverProfile)
	}
	return c, nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// intList parses "1,4,16"; with allowMax, "max" becomes 0.
func intList(name, s string, allowMax bool) ([]int, error) {
	var out []int
	for _, f := range splitList(s) {
		if allowMax && f == "max" {
			out = append(out, 0)
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("--%s: %q is not a positive number", name, f)
		}
		out = append(out, n)
	}
	return out, nil
}

func (c *config) has(s string) bool { return slices.Contains(c.scenarios, s) }

func run(args []string, stdout, stderr io.Writer) int {
	c, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 2
	}
	if c.profile != "" {
		var mode func(*profile.Profile)
		switch c.profile {
		case "cpu":
			mode = profile.CPUProfile
		case "mem":
			mode = profile.MemProfile
		case "block":
			mode = profile.BlockProfile
		case "mutex":
			mode = profile.MutexProfile
		default:
			fmt.Fprintf(stderr, "bench: --profile %q: must be cpu, mem, block or mutex\n", c.profile)
			return 2
		}
		defer profile.Start(mode, profile.ProfilePath(c.out), profile.Quiet).Stop()
	}
	raiseNoFile()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	rep, err := runSuite(ctx, c, args, stderr)
	if rep != nil {
		md, mdPath, werr := rep.write(c.out)
		if werr != nil {
			fmt.Fprintf(stderr, "bench: writing results: %v\n", werr)
			return 1
		}
		fmt.Fprintln(stdout, md)
		// stderr keeps stdout the Markdown alone; the absolute path says where
		// a relative --out landed.
		if abs, err := filepath.Abs(mdPath); err == nil {
			mdPath = abs
		}
		fmt.Fprintf(stderr, "bench: report written to %s (the JSON and SVG charts beside it)\n", mdPath)
	}
	if err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 1
	}
	return 0
}

// runSuite runs the chosen scenarios in order. A scenario that fails ends the
// suite; what was measured before it is still reported.
func runSuite(ctx context.Context, c *config, args []string, stderr io.Writer) (*Report, error) {
	tmp, err := os.MkdirTemp("", "smp-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	s := &suite{ctx: ctx, c: c, stderr: stderr, tmp: tmp, rep: newReport(c, args)}
	if err := s.serverBinary(); err != nil {
		return s.rep, err
	}
	if err := s.cryptoCosts(); err != nil {
		return s.rep, err
	}
	// Pinning starts only now: the crypto costs above are per core either way,
	// and the all-cores factor needs every core this process may use.
	if s.pin, err = startPinning(c.pin); err != nil {
		return s.rep, err
	}
	defer func() {
		if err := s.pin.restore(); err != nil {
			fmt.Fprintf(stderr, "bench: restoring this process's CPU affinity: %v\n", err)
		}
	}()
	s.reportPinning()
	for _, sc := range []struct {
		name string
		run  func() error
	}{
		{"relay-signed", s.relaySigned},
		{"relay-unsigned", s.relayUnsigned},
		{"handshakes", s.handshakes},
		{"idle-connections", s.idle},
		{"fsync", s.fsync},
		{"hostile", s.hostile},
		{"storage-messages", s.storageMessages},
		{"storage-queues", s.storageQueues},
		{"contacts", s.contacts},
	} {
		if c.has(sc.name) {
			if err := sc.run(); err != nil {
				return s.rep, err
			}
		}
	}
	return s.rep, ctx.Err()
}

// newReport is the report of a run of the suite with the command-line args,
// before anything is measured.
func newReport(c *config, args []string) *Report {
	rep := &Report{Started: time.Now().UTC(), Command: "go run ./bench " + strings.Join(args, " "),
		Machine: describeMachine(), Scenarios: c.scenarios}
	rep.Config = map[string]any{"duration": c.duration.String(), "warmup": c.warmup.String(), "pairs": c.pairs,
		"rsaPairs": c.rsaPairs, "queuesPerPair": c.queues, "window": c.window, "bodyBytes": c.body, "keys": c.keys,
		"rate": c.rate, "fsyncModes": c.fsyncModes, "fsyncPairs": c.fsyncPairs, "kems": c.kems, "dialers": c.dialers,
		"handshakeDuration": c.hsDuration.String(), "idleSteps": c.idleSteps, "idleKEM": c.idleKEM,
		"serverArgs": c.serverArgs, "serverProfile": c.serverProfile, "quick": c.quick, "pin": c.pin}
	if c.has("hostile") {
		rep.Config["hostileDuration"], rep.Config["hostileAttacks"], rep.Config["hostileKEMs"] = c.hostileDuration.String(), c.hostileAttacks, c.hostileKEMs
		rep.Config["hostileMaxConns"], rep.Config["hostileRate"], rep.Config["hostileDialers"] = c.hostileMaxConns, c.hostileRate, c.hostileDialers
		rep.Config["hostileHonestProcess"], rep.Config["hostileRebaseline"] = c.hostileHonestProc, c.hostileRebaseline
	}
	if c.has("storage-messages") || c.has("storage-queues") {
		rep.Config["storage"] = map[string]any{"store": c.storageStore, "messages": c.storageMessages, "bodyBytes": c.storageBody,
			"messageQueues": c.storageMsgQueues, "queues": c.storageQueues, "queueSecure": c.storageQueueSecure,
			"queueMessages": c.storageQueueMsgs, "queueBodyBytes": c.storageQueueBody, "steps": c.storageSteps, "connections": c.storageConns,
			"inFlight": c.storageInflight, "emptyRestarts": c.storageEmptyRestarts, "metrics": c.storageMetrics}
	}
	if c.has("contacts") {
		rep.Config["contacts"] = map[string]any{"relays": c.contactRelays, "duration": c.contactDuration.String(),
			"warmup": c.contactWarmup.String(), "window": c.contactWindow}
	}
	return rep
}

// suite is one run of the scenarios: what they share, and the report they
// fill in.
type suite struct {
	ctx     context.Context
	c       *config
	stderr  io.Writer
	tmp     string // the run's temporary directory, removed at the end
	rep     *Report
	bin     string      // the smp-server binary
	pin     *pinning    // set after the crypto costs are measured, on every CPU
	servers int         // smp-servers started, for their profile directories
	empty   *EmptyStart // the storage scenarios' empty relay, measured once per run
}

// serverBinary sets the smp-server binary: --server-bin, or one built into
// the temporary directory when a scenario needs a server.
func (s *suite) serverBinary() error {
	s.bin = s.c.serverBin
	if s.bin != "" || !slices.ContainsFunc(s.c.scenarios, func(sc string) bool { return sc != "crypto-limit" }) {
		return nil
	}
	fmt.Fprintln(s.stderr, "bench: building smp-server")
	var err error
	s.bin, err = buildServer(s.ctx, s.tmp)
	return err
}

// cryptoCosts runs the crypto-limit scenario, or, when it is not chosen,
// measures the costs briefly for the ratios of the other scenarios.
func (s *suite) cryptoCosts() error {
	c := s.c
	if c.has("crypto-limit") {
		p := newProgress("crypto-limit", 10)
		cc, err := measureCrypto(c, c.cryptoTime, p)
		if err != nil {
			return fmt.Errorf("crypto-limit: %w", err)
		}
		p.finish(fmt.Sprintf("signed cycle %.1f µs (Ed25519), limit %.0f msg/s", cc.cycle("signed-ed25519").NsPerOp/1e3, cc.cycle("signed-ed25519").LimitOps))
		s.rep.Crypto = cc
	} else if slices.ContainsFunc(c.scenarios, func(sc string) bool { return sc != "hostile" && sc != "contacts" && !strings.HasPrefix(sc, "storage-") }) {
		// The ratios need the costs: measure them quickly (hostile, contacts
		// and the storage scenarios have none).
		if cc, err := measureCrypto(c, min(c.cryptoTime, 200*time.Millisecond), newProgress("crypto costs (for the ratios)", 10)); err == nil {
			s.rep.Crypto = cc
		}
	}
	return nil
}

// reportPinning records the CPUs the servers and this process run on, and
// says so on stderr.
func (s *suite) reportPinning() {
	s.rep.Machine.Pin = s.pin.Pin
	if s.pin.Enabled {
		fmt.Fprintf(s.stderr, "bench: smp-server on CPUs %s, the load generator on CPUs %s (--pin=false: share them)\n", s.pin.ServerCPUs, s.pin.GeneratorCPUs)
	} else if s.c.pin {
		fmt.Fprintf(s.stderr, "bench: pinning %s\n", s.pin.Note)
	}
}

// start starts an smp-server with --server-args and args on a fresh data
// directory, profiled into a directory of its own with --server-profile.
func (s *suite) start(args ...string) (*server, error) { return s.startIn("", args...) }

// startIn is start on the data directory data ("": a fresh one).
func (s *suite) startIn(data string, args ...string) (*server, error) {
	full := append(slices.Clone(s.c.serverArgs), args...)
	if s.c.serverProfile != "" {
		s.servers++
		dir, err := filepath.Abs(filepath.Join(s.c.out, s.rep.stem()+"-profiles", strconv.Itoa(s.servers)))
		if err != nil {
			return nil, err
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		full = append(full, "--profile", s.c.serverProfile, "--profile-dir", dir)
		s.rep.Profiles = append(s.rep.Profiles, dir)
	}
	if data != "" {
		return startServerIn(s.ctx, s.bin, data, s.pin.serverSet(), full...)
	}
	return startServer(s.ctx, s.bin, s.tmp, s.pin.serverSet(), full...)
}

// relayArgs is a relay run of the series with the suite's load settings.
func (s *suite) relayArgs(series string, signed bool, alg codec.SigAlg, pairs int) relayRun {
	c := s.c
	return relayRun{series: series, signed: signed, alg: alg, pairs: pairs, queues: c.queues, window: c.window,
		body: c.body, warmup: c.warmup, duration: c.duration, rate: c.rate}
}

// grid runs r at each pairs count on one server, started with args, and
// returns the points; cycle names the crypto cycle the points are set
// against.
func (s *suite) grid(label string, pairsList []int, r relayRun, cycle string, args ...string) ([]RelayPoint, error) {
	srv, err := s.start(args...)
	if err != nil {
		return nil, err
	}
	var pts []RelayPoint
	for _, n := range pairsList {
		r.pairs = n
		p := newProgress(fmt.Sprintf("%s, %d pairs", label, n), (r.warmup + r.duration).Seconds())
		pt, err := runRelay(s.ctx, srv, r, p)
		if err != nil {
			p.finish("failed")
			srv.stop()
			return pts, fmt.Errorf("%s with %d pairs: %w", label, n, err)
		}
		pt.ServerArgs = strings.Join(append(slices.Clone(s.c.serverArgs), args...), " ")
		pt.ServerCores = s.pin.serverCores()
		pt.withCrypto(s.rep.Crypto, cycle)
		p.finish(fmt.Sprintf("%.0f msg/s, p99 %.2f ms, server %.0f µs CPU/msg", pt.Throughput, pt.P99Ms, pt.ServerCPUPerMsg))
		pts = append(pts, pt)
	}
	return pts, srv.stop()
}

// relaySigned runs the relay-signed scenario: Ed25519 over the pairs list
// (and at half of its peak with --half-peak), then RSA-2048.
func (s *suite) relaySigned() error {
	c, rep := s.c, s.rep
	if slices.Contains(c.keys, "ed25519") {
		pts, err := s.grid("relay-signed Ed25519", c.pairs, s.relayArgs("signed-ed25519", true, codec.SigEd25519, 0), "signed-ed25519")
		rep.Relay = append(rep.Relay, pts...)
		if err != nil {
			return err
		}
		if c.halfPeak && len(pts) > 0 {
			peak := pts[0]
			for _, p := range pts {
				if p.Throughput > peak.Throughput {
					peak = p
				}
			}
			r := s.relayArgs("signed-ed25519-half-peak", true, codec.SigEd25519, peak.Pairs)
			r.rate = peak.Throughput / 2
			hp, err := s.grid("relay-signed Ed25519 at half of peak", []int{peak.Pairs}, r, "signed-ed25519")
			if err != nil {
				return err
			}
			rep.HalfPeak = &hp[0]
		}
	}
	if slices.Contains(c.keys, "rsa") && len(c.rsaPairs) > 0 {
		pts, err := s.grid("relay-signed RSA-2048", c.rsaPairs, s.relayArgs("signed-rsa2048", true, codec.SigRSA, 0), "signed-rsa2048")
		rep.Relay = append(rep.Relay, pts...)
		if err != nil {
			return err
		}
	}
	return nil
}

// relayUnsigned runs the relay-unsigned scenario over the pairs list.
func (s *suite) relayUnsigned() error {
	pts, err := s.grid("relay-unsigned", s.c.pairs, s.relayArgs("unsigned", false, codec.SigEd25519, 0), "unsigned")
	s.rep.Relay = append(s.rep.Relay, pts...)
	return err
}

// handshakes runs the handshakes scenario, on a server of each KEM kind.
func (s *suite) handshakes() error {
	c := s.c
	for _, k := range c.kems {
		srv, err := s.start("--key-type", k)
		if err != nil {
			return err
		}
		p := newProgress("handshakes "+k, c.hsDuration.Seconds())
		hp, err := runHandshakes(s.ctx, srv, k, c.dialers, c.hsDuration, p)
		serr := srv.stop()
		if err != nil {
			p.finish("failed")
			return fmt.Errorf("handshakes %s: %w", k, err)
		}
		hp.withCrypto(s.rep.Crypto)
		p.finish(fmt.Sprintf("%.0f/s, server %.0f µs CPU each", hp.PerSecond, hp.ServerCPUPer))
		s.rep.Handshakes = append(s.rep.Handshakes, hp)
		if serr != nil {
			return serr
		}
	}
	return nil
}

// idle runs the idle-connections scenario; a step of 0 ("max") is as many
// connections as the server's limit permits.
func (s *suite) idle() error {
	c := s.c
	srv, err := s.start("--key-type", c.idleKEM)
	if err != nil {
		return err
	}
	top := 0
	for _, st := range c.idleSteps {
		if st == 0 {
			st = serverMaxConns(srv.Cmd.Process.Pid)
		}
		top = max(top, st)
	}
	p := newProgress("idle-connections", float64(top))
	res, err := runIdle(s.ctx, srv, c.idleKEM, slices.Clone(c.idleSteps), c.idleSample, p)
	serr := srv.stop()
	s.rep.Idle = res
	if err != nil {
		p.finish("failed")
		return fmt.Errorf("idle-connections: %w", err)
	}
	p.finish(fmt.Sprintf("%.0f bytes RSS per connection; stopped by %s", res.SlopeBytes, res.StoppedBy))
	return serr
}

// fsync runs the fsync scenario: a signed run under each --fsync mode (and
// at half of its peak with --half-peak).
func (s *suite) fsync() error {
	c := s.c
	for _, m := range c.fsyncModes {
		r := s.relayArgs("fsync-"+m, true, codec.SigEd25519, 0)
		pts, err := s.grid("fsync "+m, []int{c.fsyncPairs}, r, "signed-ed25519", "--fsync", m)
		s.rep.Fsync = append(s.rep.Fsync, pts...)
		if err != nil {
			return err
		}
		if c.halfPeak {
			r.series, r.rate = "fsync-"+m+"-half-peak", pts[0].Throughput/2
			hp, err := s.grid("fsync "+m+" at half of peak", []int{c.fsyncPairs}, r, "signed-ed25519", "--fsync", m)
			s.rep.Fsync = append(s.rep.Fsync, hp...)
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// hostile runs the hostile scenario (hostile.go).
func (s *suite) hostile() error {
	res, err := runHostile(s.ctx, s.c, s.bin, s.start)
	s.rep.Hostile = res
	if err != nil {
		return fmt.Errorf("hostile: %w", err)
	}
	return nil
}
