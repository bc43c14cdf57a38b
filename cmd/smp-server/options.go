package main

import (
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/diskstore"
	"github.com/smprelay/smprelay/engine"
	"github.com/smprelay/smprelay/transport"
	"github.com/smprelay/smprelay/wal"
)

// config is the relay's effective configuration, one field per option.
type config struct {
	data             string
	listen           string
	blockSize        int
	fsync            string
	fsyncInterval    time.Duration
	fsyncIOUring     string
	store            string
	cacheSize        int64 // the disk store's body cache, bytes
	quota            int
	messageTTL       time.Duration
	suspendedTTL     time.Duration
	handshakeTimeout time.Duration
	keyType          string
	logLevel         string
	limits           transport.ConnLimits
	newPerMinute     int
	// Relay-wide caps as the options give them (0: no limit); engineLimits
	// maps them onto engine.Limits, where 0 means the default.
	maxStoredBytes int64
	maxQueues      int64
	unsecuredTTL   time.Duration
	// Per-source limits as the options give them (0: no limit); connLimits
	// maps them onto transport.ConnLimits, where 0 means the default.
	maxPerSource        int
	handshakesPerSource int
	drainTimeout        time.Duration
	metricsListen       string // normalised: "" (off) or HOST:PORT
	profile             string // cpu, mem, block, mutex or empty
	profileDir          string
	newQueues           string // on or off (SPEC §11)
	creatorKeys         string // the creator-keys file; "": anyone may create
	// creatorKeySet is the keys creatorKeys holds, read by resolve (SPEC §5
	// creator keys); nil when creatorKeys is "", empty when the file holds
	// none. Owned by resolve, then read only.
	creatorKeySet []*codec.VerifyKey
}

// kind is how an option's value is written in the config file.
type kind uint8

const (
	kString   kind = iota // a quoted string
	kInt                  // a bare integer
	kDuration             // a quoted Go duration
)

// option is one row of the table that drives flags, environment variables,
// the config file, defaults, validation, --print-config, SIGHUP and the
// file init writes. Its name is the flag, the config key, and (upper case,
// '-' as '_', with SMP_ before it) the environment variable.
type option struct {
	name    string
	kind    kind
	def     string // default, as a flag would give it
	usage   string // help text; its lines become the config file's comment
	allowed string // what a valid value is, for errors: "must be " + allowed
	live    bool   // SIGHUP applies it to the running relay
	// set parses s into c and reports false when s is not allowed.
	set func(c *config, s string) bool
}

// envName is the option's environment variable.
func (o *option) envName() string {
	return "SMP_" + strings.ToUpper(strings.ReplaceAll(o.name, "-", "_"))
}

func intOpt(name string, def, min int, usage, allowed string, live bool, field func(*config) *int) option {
	return option{name: name, kind: kInt, def: strconv.Itoa(def), usage: usage, allowed: allowed, live: live,
		set: func(c *config, s string) bool {
			n, err := strconv.Atoi(s)
			if err != nil || n < min {
				return false
			}
			*field(c) = n
			return true
		}}
}

// int64Opt is intOpt for values that may pass 2³¹ (bytes), on every platform.
func int64Opt(name string, def, min int64, usage, allowed string, live bool, field func(*config) *int64) option {
	return option{name: name, kind: kInt, def: strconv.FormatInt(def, 10), usage: usage, allowed: allowed, live: live,
		set: func(c *config, s string) bool {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil || n < min {
				return false
			}
			*field(c) = n
			return true
		}}
}

func durOpt(name string, def time.Duration, usage string, live bool, field func(*config) *time.Duration) option {
	return option{name: name, kind: kDuration, def: shortDuration(def), usage: usage,
		allowed: `a positive Go duration such as "30s", "10m" or "504h"`, live: live,
		set: func(c *config, s string) bool {
			d, err := time.ParseDuration(s)
			if err != nil || d <= 0 {
				return false
			}
			*field(c) = d
			return true
		}}
}

func enumOpt(name, def string, choices []string, usage string, live bool, field func(*config) *string) option {
	allowed := strings.Join(choices[:len(choices)-1], ", ") + " or " + choices[len(choices)-1]
	return option{name: name, kind: kString, def: def, usage: usage, allowed: allowed, live: live,
		set: func(c *config, s string) bool {
			for _, ch := range choices {
				if s == ch {
					*field(c) = s
					return true
				}
			}
			return false
		}}
}

func strOpt(name, def, usage, allowed string, live bool, check func(string) (string, bool), field func(*config) *string) option {
	return option{name: name, kind: kString, def: def, usage: usage, allowed: allowed, live: live,
		set: func(c *config, s string) bool {
			v, ok := check(s)
			if ok {
				*field(c) = v
			}
			return ok
		}}
}

// shortDuration prints d without zero units: 504h, not 504h0m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// options is the table. Its order is the order of --help, --print-config and
// the file init writes.
var options = []option{
	strOpt("data", "data", "data directory: server.key, fingerprint, LOCK, the log in wal/ (created 0700 if absent)",
		"a directory path", false, nonEmpty, func(c *config) *string { return &c.data }),
	strOpt("listen", "0.0.0.0:5223", "TCP address to listen on, HOST:PORT (PORT 0 picks a free port)",
		"HOST:PORT with PORT from 0 to 65535", false, hostPort, func(c *config) *string { return &c.listen }),
	{name: "block-size", kind: kInt, def: strconv.Itoa(codec.DefaultBlockSize),
		usage:   "transport block size in bytes; clients must use the same",
		allowed: fmt.Sprintf("a power of two from %d to %d", codec.MinBlockSize, codec.MaxBlockSize),
		set: func(c *config, s string) bool {
			n, err := strconv.Atoi(s)
			if err != nil || !codec.ValidBlockSize(n) {
				return false
			}
			c.blockSize = n
			return true
		}},
	enumOpt("store", "disk", []string{"disk", "wal", "memory"}, "where state is kept:\n"+
		"disk    queues in a write-ahead log in DATA/wal, message bodies in DATA/bodies behind\n"+
		"        a cache of cache-size: RAM holds the queues and a small index, not the bodies;\n"+
		"        everything survives restarts and crashes. Opens a wal store's directory and\n"+
		"        moves its bodies to DATA/bodies at the first start\n"+
		"wal     everything in the write-ahead log, bodies in RAM too: survives restarts and\n"+
		"        crashes, but RAM grows with what is stored and every start reads every body\n"+
		"memory  nothing survives a restart", false, func(c *config) *string { return &c.store }),
	int64Opt("cache-size", diskstore.DefaultCacheBytes, 0,
		"bytes of message bodies the disk store keeps in RAM to deliver without reading\n"+
			"the disk; 0: no cache", "an integer of at least 0 (0: no cache)", true,
		func(c *config) *int64 { return &c.cacheSize }),
	enumOpt("fsync", "always", []string{"always", "interval", "never"}, "durability of the disk and wal stores:\n"+
		"always    a NEW/KEY/OFF/DEL/SEND/ACK is answered only once its log record is fsynced\n"+
		"          (group commit): kill -9 or power loss loses nothing that was answered\n"+
		"interval  answer at once, fsync every fsync-interval: kill -9 loses at most what\n"+
		"          was not yet written (microseconds); power loss up to the last interval\n"+
		"never     answer at once, never fsync while running (only at compaction and\n"+
		"          shutdown): kill -9 loses at most what was not yet written; power loss\n"+
		"          anything the kernel had not written back", false, func(c *config) *string { return &c.fsync }),
	durOpt("fsync-interval", wal.DefaultSyncInterval, "how often fsync interval fsyncs the log", false,
		func(c *config) *time.Duration { return &c.fsyncInterval }),
	enumOpt("fsync-io-uring", "auto", []string{"auto", "off"}, "how the disk and wal stores fsync a large group of records:\n"+
		"auto  through io_uring where the kernel allows it, so that the event loop goes on\n"+
		"      meanwhile (small groups, and kernels without io_uring, fsync in place)\n"+
		"off   always in place", false, func(c *config) *string { return &c.fsyncIOUring }),
	enumOpt("key-type", "mlkem768x25519", []string{"mlkem768x25519", "x25519", "rsa"},
		"transport key kind when the key is created (an existing key is kept)", false,
		func(c *config) *string { return &c.keyType }),
	intOpt("quota", engine.DefaultLimits.Quota, 1, "messages a queue may hold before SEND gets ERR QUOTA",
		"an integer of at least 1", true, func(c *config) *int { return &c.quota }),
	durOpt("message-ttl", engine.DefaultLimits.MessageTTL, "delete stored messages older than this", true,
		func(c *config) *time.Duration { return &c.messageTTL }),
	durOpt("suspended-ttl", engine.DefaultLimits.SuspendedTTL, "delete queues suspended (OFF) for longer than this", true,
		func(c *config) *time.Duration { return &c.suspendedTTL }),
	intOpt("new-queues-per-minute", engine.DefaultLimits.NewQueuesPerMinute, 1,
		"NEW commands per source (IPv4 address or IPv6 prefix) per minute, shared by\n"+
			"its connections so that reconnecting resets nothing; more get ERR QUOTA", "an integer of at least 1", true,
		func(c *config) *int { return &c.newPerMinute }),
	int64Opt("max-stored-bytes", engine.DefaultLimits.MaxStoredBytes, 0,
		"bytes of message bodies the relay stores, all queues together; a SEND past it\n"+
			"gets ERR QUOTA until messages are acknowledged or expire; 0: no limit.\n"+
			"The default (4 GiB) fits a 23 GiB machine with the memory or wal store,\n"+
			"which keep bodies in RAM (see docs/operations.md)", "an integer of at least 0 (0: no limit)", true,
		func(c *config) *int64 { return &c.maxStoredBytes }),
	int64Opt("max-queues", engine.DefaultLimits.MaxQueues, 0,
		"queues the relay holds; NEW past it gets ERR QUOTA; 0: no limit",
		"an integer of at least 0 (0: no limit)", true, func(c *config) *int64 { return &c.maxQueues }),
	durOpt("unsecured-ttl", engine.DefaultLimits.UnsecuredTTL,
		"delete queues never secured (KEY) this long after NEW, with their messages", true,
		func(c *config) *time.Duration { return &c.unsecuredTTL }),
	enumOpt("new-queues", "on", []string{"on", "off"},
		"on: NEW creates queues (with creator-keys, only NEW signed by one of them);\n"+
			"off: every NEW gets ERR AUTH while every other command works, to close a\n"+
			"relay to new queues before it is decommissioned", true, func(c *config) *string { return &c.newQueues }),
	strOpt("creator-keys", "", "file of the public keys that may create queues, one a line (base64 of\n"+
		"SubjectPublicKeyInfo DER, Ed25519 or RSA; blank lines and # comments allowed):\n"+
		"NEW must be signed by one of them. Re-read on SIGHUP; empty: anyone may create",
		"empty (anyone may create) or a file path", true, anyPath, func(c *config) *string { return &c.creatorKeys }),
	durOpt("handshake-timeout", 10*time.Second, "close connections whose client hello is not complete by then", false,
		func(c *config) *time.Duration { return &c.handshakeTimeout }),
	intOpt("max-conns", 0, 0, "open connections at most; 0 means the open-file limit less 64",
		"an integer of at least 0 (0: automatic)", true, func(c *config) *int { return &c.limits.MaxConns }),
	intOpt("max-conns-per-source", transport.DefaultConnLimits.MaxConnsPerSource, 0,
		"open connections of one source (IPv4 address or IPv6 prefix) at most; more are\n"+
			"closed at accept; 0: no limit. Clients behind one NAT share it",
		"an integer of at least 0 (0: no limit)", true, func(c *config) *int { return &c.maxPerSource }),
	intOpt("handshakes-per-source", transport.DefaultConnLimits.HandshakesPerSource, 0,
		"connections one source may open per second (a burst of a tenth of it); more are\n"+
			"closed at accept; 0: no limit", "an integer of at least 0 (0: no limit)", true,
		func(c *config) *int { return &c.handshakesPerSource }),
	intOpt("source-prefix-v6", transport.DefaultConnLimits.SourcePrefixV6, 1,
		"IPv6 addresses with this many leading bits in common are one source", "an integer from 1 to 128", false,
		func(c *config) *int { return &c.limits.SourcePrefixV6 }),
	durOpt("idle-timeout", transport.DefaultConnLimits.IdleTimeout,
		"close connections that send no block for this long (clients PING to stay)", true,
		func(c *config) *time.Duration { return &c.limits.IdleTimeout }),
	intOpt("max-outbound", transport.DefaultConnLimits.MaxOutbound, 1,
		"bytes waiting for a client that does not read before it is disconnected (at least one block)",
		"an integer of at least block-size", true, func(c *config) *int { return &c.limits.MaxOutbound }),
	intOpt("blocks-per-second", transport.DefaultConnLimits.BlocksPerSecond, 1,
		"blocks read from one connection per second; more wait, and a client\n"+
			"that piles up max-inbound-blocks waiting blocks is disconnected", "an integer of at least 1", true,
		func(c *config) *int { return &c.limits.BlocksPerSecond }),
	intOpt("max-inbound-blocks", transport.DefaultConnLimits.MaxInboundBlocks, 1,
		"blocks read from one connection and waiting (past its rate, or for its turn of\n"+
			"work) before it is disconnected as a flood: the relay's memory per connection\n"+
			"for input, block-size each", "an integer of at least 1", true,
		func(c *config) *int { return &c.limits.MaxInboundBlocks }),
	durOpt("drain-timeout", 30*time.Second,
		"on SIGTERM/SIGINT, how long to wait for in-flight replies before closing connections as they are", true,
		func(c *config) *time.Duration { return &c.drainTimeout }),
	strOpt("metrics-listen", "", "serve Prometheus /metrics and /healthz on this address; empty: off.\n"+
		"PORT or :PORT binds 127.0.0.1; another host must be given in full and is warned about",
		`empty (off), PORT, :PORT or HOST:PORT with PORT from 0 to 65535`, false, metricsAddr,
		func(c *config) *string { return &c.metricsListen }),
	enumOpt("log-level", "info", []string{"debug", "info", "warn", "error"},
		"log level; only debug logs client data (IDs, addresses, commands), and only\n"+
			"when the relay started at debug", true, func(c *config) *string { return &c.logLevel }),
	strOpt("profile", "", "write a Go profile while running: cpu, mem, block or mutex; empty: off\n"+
		"(for explaining a slow benchmark; costs speed, off in production)",
		"empty (off), cpu, mem, block or mutex", false, profileKind, func(c *config) *string { return &c.profile }),
	strOpt("profile-dir", ".", "directory profile writes its file to (cpu.pprof, mem.pprof, ...)",
		"a directory path", false, nonEmpty, func(c *config) *string { return &c.profileDir }),
}

func nonEmpty(s string) (string, bool) { return s, s != "" }

func anyPath(s string) (string, bool) { return s, true }

func profileKind(s string) (string, bool) {
	switch s {
	case "", "cpu", "mem", "block", "mutex":
		return s, true
	}
	return "", false
}

func hostPort(s string) (string, bool) {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", false
	}
	p, err := strconv.Atoi(port)
	return s, err == nil && p >= 0 && p <= 65535
}

// metricsAddr normalises metrics-listen: "" is off, PORT and :PORT bind the
// loopback address (metrics are for a local scraper unless said otherwise).
func metricsAddr(s string) (string, bool) {
	if s == "" {
		return "", true
	}
	if _, err := strconv.Atoi(s); err == nil {
		s = ":" + s
	}
	if strings.HasPrefix(s, ":") {
		s = "127.0.0.1" + s
	}
	return hostPort(s)
}

// loopback reports whether the host of addr is a loopback name or address.
func loopback(addr string) bool {
	host, _, _ := net.SplitHostPort(addr)
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Sources of a value, in rising precedence.
const (
	srcDefault = iota
	srcFile
	srcEnv
	srcFlag
)

// setting is where one option's effective value came from.
type setting struct {
	raw   string // the value as given
	src   int
	where string // "default", "file PATH:LINE", "env SMP_X", "flag --x"
}

// resolved is the outcome of resolving every option.
type resolved struct {
	cfg        config
	settings   []setting // parallel to options
	configPath string    // the config file read (or that would be read)
	configSeen bool      // it existed
}

// startFlags is what the start-like commands read from their command line:
// the flags that were set, and the ones that are not options.
type startFlags struct {
	set         map[string]string // option name -> value, flags given on the command line
	config      string            // --config
	printConfig bool              // --print-config
	host        string            // --host (fingerprint)
	quiet       bool              // --quiet (fingerprint): the fingerprint alone
}

// flagValue records a string flag and whether it was given.
type flagValue struct {
	name string
	set  map[string]string
}

func (f flagValue) String() string { return f.set[f.name] }
func (f flagValue) Set(s string) error {
	f.set[f.name] = s
	return nil
}

// parseFlags parses the command line of cmd (start, init or fingerprint):
// every option as --NAME VALUE, and --config; start adds --print-config and
// fingerprint adds --host.
func parseFlags(cmd string, args []string, stderr io.Writer) (startFlags, error) {
	sf := startFlags{set: make(map[string]string)}
	fl := flag.NewFlagSet("smp-server "+cmd, flag.ContinueOnError)
	fl.SetOutput(stderr)
	for i := range options {
		fl.Var(flagValue{name: options[i].name, set: sf.set}, options[i].name, options[i].usage)
	}
	fl.StringVar(&sf.config, "config", "", "config file (default DATA/smp-server.conf)")
	if cmd == "start" {
		fl.BoolVar(&sf.printConfig, "print-config", false, "print the effective configuration and where each value comes from, and exit")
	}
	if cmd == "fingerprint" {
		fl.StringVar(&sf.host, "host", "", "host[:port] clients reach the relay at (default: the host of listen)")
		fl.BoolVar(&sf.quiet, "quiet", false, "print the fingerprint alone, for scripts")
	}
	fl.Usage = func() { printUsage(stderr, cmd, fl) }
	if err := fl.Parse(args); err != nil {
		return sf, err
	}
	if fl.NArg() > 0 {
		return sf, fmt.Errorf("unexpected argument %q", fl.Arg(0))
	}
	return sf, nil
}

// printUsage lists the command's flags from the option table.
func printUsage(w io.Writer, cmd string, fl *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: smp-server %s [flags]\n\nEvery option is also a config file key and an environment variable\n"+
		"(SMP_ and the name in upper case, '-' as '_'); a flag wins over the\n"+
		"environment, which wins over the config file. Options marked (live)\n"+
		"are re-read on SIGHUP.\n\nOptions:\n", cmd)
	for i := range options {
		o := &options[i]
		live := ""
		if o.live {
			live = " (live)"
		}
		fmt.Fprintf(w, "  --%s %s  (default %s; %s)%s\n", o.name, placeholder(o.kind), formatValue(o.kind, o.def), o.envName(), live)
		for _, l := range strings.Split(o.usage, "\n") {
			fmt.Fprintf(w, "        %s\n", l)
		}
	}
	fmt.Fprintf(w, "\nOther flags:\n")
	fl.VisitAll(func(f *flag.Flag) {
		if optionIndex(f.Name) < 0 {
			fmt.Fprintf(w, "  --%s\n        %s\n", f.Name, f.Usage)
		}
	})
}

func placeholder(k kind) string {
	switch k {
	case kInt:
		return "int"
	case kDuration:
		return "duration"
	}
	return "string"
}

func optionIndex(name string) int {
	for i := range options {
		if options[i].name == name {
			return i
		}
	}
	return -1
}

// configFile names the config file: --config, else SMP_CONFIG, else
// DATA/smp-server.conf with DATA from the flag, the environment or the
// default (not from the file itself). explicit is false for the default path,
// which may be absent.
func configFile(sf startFlags, getenv func(string) string) (path string, explicit bool) {
	if sf.config != "" {
		return sf.config, true
	}
	if p := getenv("SMP_CONFIG"); p != "" {
		return p, true
	}
	data := options[optionIndex("data")].def
	if v := getenv("SMP_DATA"); v != "" {
		data = v
	}
	if v, ok := sf.set["data"]; ok {
		data = v
	}
	return filepath.Join(data, "smp-server.conf"), false
}

// resolve computes the effective configuration: flag > environment > config
// file > default; a nil readFile reads no file (init, which writes it). Every invalid value is reported, each error naming the
// option, the value, where it came from and what is allowed.
func resolve(sf startFlags, getenv func(string) string, readFile func(string) ([]byte, error)) (*resolved, error) {
	r := &resolved{settings: make([]setting, len(options))}
	for i := range options {
		r.settings[i] = setting{raw: options[i].def, src: srcDefault, where: "default"}
	}
	path, explicit := configFile(sf, getenv)
	r.configPath = path
	var text []byte
	err := fs.ErrNotExist
	if readFile != nil {
		text, err = readFile(path)
	}
	switch {
	case err == nil:
		r.configSeen = true
		entries, err := parseConfig(path, text)
		if err != nil {
			return r, err
		}
		for _, e := range entries {
			i := optionIndex(e.key)
			if i < 0 {
				hint := "see smp-server start -h"
				if alt := strings.ReplaceAll(e.key, "_", "-"); optionIndex(alt) >= 0 {
					hint = "did you mean " + alt + "?"
				}
				return r, fmt.Errorf("%s:%d: unknown option %q (%s)", path, e.line, e.key, hint)
			}
			if want := options[i].kind == kInt; e.quoted == want {
				if want {
					return r, fmt.Errorf("%s:%d: %s is an integer: write it without quotes", path, e.line, e.key)
				}
				return r, fmt.Errorf("%s:%d: %s is a string: write it in double quotes", path, e.line, e.key)
			}
			r.settings[i] = setting{raw: e.value, src: srcFile, where: fmt.Sprintf("file %s:%d", path, e.line)}
		}
	case errors.Is(err, fs.ErrNotExist) && (!explicit || readFile == nil):
	case !explicit && checkDataDir(filepath.Dir(path)) != nil:
		return r, checkDataDir(filepath.Dir(path)) // the data directory is a file: say so, not ENOTDIR
	default:
		return r, fmt.Errorf("config file: %w", err)
	}
	for i := range options {
		if v, ok := lookupEnv(getenv, options[i].envName()); ok {
			r.settings[i] = setting{raw: v, src: srcEnv, where: "env " + options[i].envName()}
		}
		if v, ok := sf.set[options[i].name]; ok {
			r.settings[i] = setting{raw: v, src: srcFlag, where: "flag --" + options[i].name}
		}
	}
	var errs []error
	for i := range options {
		o, s := &options[i], &r.settings[i]
		if !o.set(&r.cfg, s.raw) {
			errs = append(errs, fmt.Errorf("%s = %q (%s): must be %s", o.name, s.raw, s.where, o.allowed))
		}
	}
	if len(errs) == 0 && r.cfg.limits.SourcePrefixV6 > 128 {
		s := &r.settings[optionIndex("source-prefix-v6")]
		errs = append(errs, fmt.Errorf("source-prefix-v6 = %q (%s): must be an integer from 1 to 128", s.raw, s.where))
	}
	if len(errs) == 0 && r.cfg.creatorKeys != "" && readFile != nil {
		keys, err := readCreatorKeys(r.cfg.creatorKeys, readFile)
		if err != nil {
			s := &r.settings[optionIndex("creator-keys")]
			errs = append(errs, fmt.Errorf("creator-keys = %q (%s): %w", s.raw, s.where, err))
		}
		r.cfg.creatorKeySet = keys
	}
	if len(errs) == 0 && r.cfg.limits.MaxOutbound < r.cfg.blockSize {
		s := &r.settings[optionIndex("max-outbound")]
		errs = append(errs, fmt.Errorf("max-outbound = %q (%s): must be an integer of at least block-size (%d)",
			s.raw, s.where, r.cfg.blockSize))
	}
	return r, errors.Join(errs...)
}

// lookupEnv treats an empty variable as unset, as shells make unsetting awkward.
func lookupEnv(getenv func(string) string, name string) (string, bool) {
	v := getenv(name)
	return v, v != ""
}

// printConfig writes every option with its effective value and source, in
// the config file's own syntax so the output can seed a config file.
func (r *resolved) printConfig(w io.Writer) {
	state := "absent"
	if r.configSeen {
		state = "read"
	}
	fmt.Fprintf(w, "# config file: %s (%s)\n", r.configPath, state)
	for _, warning := range envWarnings(os.Environ()) {
		fmt.Fprintf(w, "# warning: %s\n", warning)
	}
	for i := range options {
		s := &r.settings[i]
		where := s.where
		if options[i].name == "max-conns" && r.cfg.limits.MaxConns == 0 {
			where += "; " + autoMaxConnsText()
		}
		fmt.Fprintf(w, "%-22s = %-24s # %s\n", options[i].name, formatValue(options[i].kind, s.raw), where)
	}
}

// autoMaxConnsText says what max-conns 0 means on this machine.
func autoMaxConnsText() string {
	n, lim, ok := transport.AutoMaxConns()
	if !ok {
		return fmt.Sprintf("automatic: %d (the open-file limit could not be read)", n)
	}
	return fmt.Sprintf("automatic: %d (open-file limit %d less %d kept for files)", n, lim, lim-uint64(n))
}

// notOptions are SMP_ variables that are not relay options: SMP_CONFIG names
// the config file, and the smp CLI's variables live in the same shells.
var notOptions = map[string]bool{"SMP_CONFIG": true, "SMP_SERVER": true, "SMP_FINGERPRINT": true, "SMP_STATE": true}

// envWarnings names every SMP_ variable in environ that is not an option but
// is one edit (a letter added, dropped, changed, or two swapped) away from
// one, which is almost surely a typo that leaves the option at its default.
// Other unknown SMP_ variables are left alone: other tools may use the prefix.
func envWarnings(environ []string) []string {
	var out []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, "SMP_") || notOptions[name] {
			continue
		}
		known := false
		var near string
		for i := range options {
			env := options[i].envName()
			if env == name {
				known = true
				break
			}
			if near == "" && editDistance(name, env) == 1 {
				near = env
			}
		}
		if !known && near != "" {
			out = append(out, fmt.Sprintf("environment variable %s is not an option and is ignored; did you mean %s?", name, near))
		}
	}
	return out
}

// editDistance is the optimal string alignment distance between a and b:
// insertions, deletions, substitutions and swaps of neighbours cost one each.
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}

func formatValue(k kind, raw string) string {
	if k == kInt {
		return raw
	}
	return quote(raw)
}

// changes compares the live and restart-only options of two resolutions.
func changes(old, new *resolved) (live, restart []string) {
	for i := range options {
		a, b := old.settings[i].raw, new.settings[i].raw
		if a == b {
			continue
		}
		if options[i].live {
			live = append(live, fmt.Sprintf("%s %s -> %s", options[i].name, a, b))
		} else {
			restart = append(restart, options[i].name)
		}
	}
	return live, restart
}

// parseLevel maps log-level to slog's levels.
func parseLevel(s string) slog.Level {
	switch s {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

// engineLimits and connLimits are the live options as the engine takes them.
func (c *config) engineLimits() engine.Limits {
	return engine.Limits{Quota: c.quota, MessageTTL: c.messageTTL, SuspendedTTL: c.suspendedTTL,
		NewQueuesPerMinute: c.newPerMinute, MaxStoredBytes: noLimit64(c.maxStoredBytes),
		MaxQueues: noLimit64(c.maxQueues), UnsecuredTTL: c.unsecuredTTL,
		NewQueuesClosed: c.newQueues == "off", CreatorKeys: c.creatorKeySet}
}

// readCreatorKeys reads a creator-keys file (SPEC §5): one key a line in
// the §2 signature-key encoding, base64 (standard, padded) of X.509
// SubjectPublicKeyInfo DER, Ed25519 or RSA 2048–4096 bits with e = 65537;
// surrounding blanks, blank lines and lines starting with # are skipped. A
// bad line or a key given twice is an error naming PATH:LINE. A file
// holding no key gives an empty, not nil, set: no NEW is admitted.
func readCreatorKeys(path string, readFile func(string) ([]byte, error)) ([]*codec.VerifyKey, error) {
	text, err := readFile(path)
	if err != nil {
		return nil, err
	}
	keys := []*codec.VerifyKey{}
	seen := make(map[string]int) // SPKI DER -> line
	for i, line := range strings.Split(string(text), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		der, err := base64.StdEncoding.Strict().DecodeString(line)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: not base64 (one key a line, base64 of SubjectPublicKeyInfo DER): %v", path, i+1, err)
		}
		k, err := codec.ParseVerifyKey(der)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: not an Ed25519 or RSA (2048-4096 bits, e = 65537) public key: %v", path, i+1, err)
		}
		if at, ok := seen[string(der)]; ok {
			return nil, fmt.Errorf("%s:%d: the same key as line %d", path, i+1, at)
		}
		seen[string(der)] = i + 1
		keys = append(keys, k)
	}
	return keys, nil
}

func (c *config) connLimits() transport.ConnLimits {
	l := c.limits
	l.MaxConnsPerSource, l.HandshakesPerSource = noLimit(c.maxPerSource), noLimit(c.handshakesPerSource)
	return l
}

// noLimit maps an option's 0 (no limit) onto the engine's -1.
func noLimit(n int) int {
	if n == 0 {
		return -1
	}
	return n
}

// noLimit64 is noLimit for the engine's int64 caps.
func noLimit64(n int64) int64 {
	if n == 0 {
		return -1
	}
	return n
}

// osEnv and readConfigFile are the real sources; tests pass their own.
func osEnv(name string) string { return os.Getenv(name) }

func readConfigFile(path string) ([]byte, error) { return os.ReadFile(path) }
