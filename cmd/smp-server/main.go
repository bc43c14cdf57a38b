// Command smp-server runs an SMP relay (SPEC §11):
//
//	smp-server init        [--data DIR] [--config FILE] [option flags]
//	smp-server start       [--data DIR] [--listen HOST:PORT] [--config FILE] [option flags] [--print-config]
//	smp-server fingerprint [--data DIR] [--host NAME[:PORT]]
//	smp-server admin       [--data DIR] COMMAND [ARGS]
//	smp-server creator-key new [--type ed25519|rsa] --out FILE
//	smp-server version
//
// start creates DIR and a server transport key when they are absent, writes
// the key's fingerprint to DIR/fingerprint, prints "listening on HOST:PORT"
// once it accepts connections, on SIGHUP re-reads its configuration and
// applies the options that can change live, and on SIGTERM or SIGINT drains
// (answers what is in flight), flushes its log and exits 0.
//
// Every option comes from one table (options.go): a flag, an SMP_
// environment variable and a config file key (conffile.go), with the
// precedence flag > environment > file > default.
package main

import (
	"context"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pkg/profile"
	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/diskstore"
	"github.com/smprelay/smprelay/engine"
	"github.com/smprelay/smprelay/internal/atomicfile"
	"github.com/smprelay/smprelay/store"
	"github.com/smprelay/smprelay/transport"
	"github.com/smprelay/smprelay/wal"
)

const usage = `smp-server runs a Simplex Messaging Protocol relay.

Usage:
  smp-server init [flags]          create the data directory, the transport key and a
                                   commented config file with every option
  smp-server start [flags]         start the relay (creates the data directory and key if
                                   absent; --print-config shows the configuration and exits)
  smp-server fingerprint [flags]   print the key's fingerprint and the server line of an invitation
  smp-server admin [flags] CMD     send a command to the running relay (stats, status, block,
                                   unblock, delete, new-queues, compact); 'smp-server admin -h'
  smp-server creator-key new --out FILE [--type ed25519|rsa]
                                   make a creator key pair: the private key to FILE, the
                                   creator-keys line on stdout
  smp-server version               print the version, the Go version and the protocol version
  smp-server help                  show this help

Run 'smp-server start -h' for the options (flags, SMP_ environment variables, config keys).
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "start":
		return start(args[1:], stdout, stderr)
	case "init":
		return initCmd(args[1:], stdout, stderr)
	case "fingerprint":
		return fingerprintCmd(args[1:], stdout, stderr)
	case "admin":
		return adminCmd(args[1:], stdout, stderr)
	case "creator-key":
		return creatorKeyCmd(args[1:], stdout, stderr)
	case "version":
		return versionCmd(stdout)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "smp-server: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}

// configure parses cmd's flags and resolves the configuration. A non-negative
// code means: return it (help was shown, or the configuration was rejected).
func configure(cmd string, args []string, stderr io.Writer, readFile func(string) ([]byte, error)) (startFlags, *resolved, int) {
	sf, err := parseFlags(cmd, args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return sf, nil, 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "smp-server: %v\n", err)
		return sf, nil, 2
	}
	r, err := resolve(sf, osEnv, readFile)
	if err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintf(stderr, "smp-server: %s\n", line)
		}
		return sf, nil, 2
	}
	return sf, r, -1
}

func start(args []string, stdout, stderr io.Writer) int {
	sf, r, code := configure("start", args, stderr, readConfigFile)
	if code >= 0 {
		return code
	}
	if sf.printConfig {
		r.printConfig(stdout)
		return 0
	}
	return serve(sf, r, stdout, stderr)
}

// serve runs the relay until a signal drains it. Its goroutines: the caller's
// runs the event loops (Serve); the signal goroutine owns the configuration
// in force and handles SIGHUP, SIGTERM and SIGINT.
func serve(sf startFlags, r *resolved, stdout, stderr io.Writer) int {
	c := &r.cfg
	// Caught from here on: a SIGTERM during a long log replay still ends in
	// an orderly stop (the server drains as soon as it is up), and a SIGHUP
	// is applied then.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)

	d := &daemon{cfg: c, sf: sf, debugLog: c.logLevel == "debug", creatorKeysPath: c.creatorKeys}
	d.level.Set(parseLevel(c.logLevel))
	d.log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: &d.level}))
	if c.profile != "" {
		// Stopped (and the file written) on every return of serve, after the
		// log is flushed.
		defer d.startProfile().Stop()
	}
	d.warnAtStart(r)

	// Bound before the data directory is touched, so that an address in use
	// fails at once, naming the address, with nothing created or compacted.
	ln, ok := d.bind()
	if !ok {
		return 1
	}
	defer ln.Close()
	dirLock, ok := d.lockDataDir()
	if !ok {
		return 1
	}
	defer dirLock.Unlock()
	if !d.loadKey() || !d.open() {
		return 1
	}
	return d.stop(d.serveUntilDrained(ln, r, sigs, stdout))
}

// daemon is what serve's phases share: the logger, and the key, store, engine
// and server as each phase sets them up.
type daemon struct {
	cfg      *config // as started; the signal goroutine holds the one in force
	sf       startFlags
	log      *slog.Logger
	level    slog.LevelVar // --log-level, which a SIGHUP can change
	debugLog bool          // started at log-level debug: client data may be logged

	key   *codec.KEMPrivateKey
	fp    string      // the key's fingerprint
	store store.Store // closed last: it flushes the log
	e     *engine.Engine
	srv   *transport.Server

	// Set by ready on gnet's boot goroutine; read after Serve returned.
	stopMetrics func(context.Context) error
	metricsErr  error

	// limitsMu is held by whoever replaces the engine's limits: the signal
	// goroutine (reload) and the admin socket (new-queues), so that neither
	// writes back a stale copy over the other's change.
	limitsMu sync.Mutex
	// newQueuesOverride is what "admin new-queues" set ("on" or "off"),
	// until a reload clears it (""). Guarded by limitsMu.
	newQueuesOverride string
	// creatorKeysPath is the creator-keys file in force ("" for none), which
	// "admin creator-keys" edits: set at start and by each reload. Guarded by
	// limitsMu.
	creatorKeysPath string
}

// startProfile starts the --profile profiler and says that it slows the
// relay. NoShutdownHook leaves SIGINT and SIGTERM to the drain.
func (d *daemon) startProfile() interface{ Stop() } {
	c := d.cfg
	mode, _ := profileMode(c.profile)
	p := profile.Start(mode, profile.ProfilePath(c.profileDir), profile.NoShutdownHook, profile.Quiet)
	d.log.Warn("profiling is on: the relay runs slower", "profile", c.profile, "dir", c.profileDir)
	return p
}

// warnAtStart logs the configuration's start-up lines (docs/log-format.md
// gives their order): debug logging, the config file read, metrics reachable
// from the network, mistyped SMP_ variables and a max-conns the open-file
// limit does not allow.
func (d *daemon) warnAtStart(r *resolved) {
	c, log := d.cfg, d.log
	if d.debugLog {
		log.Warn("debug logging is on: client data (queue IDs, addresses, commands) will be logged; do not use in production")
	}
	if r.configSeen {
		log.Info("configuration read", "file", r.configPath)
	}
	if c.metricsListen != "" && !loopback(c.metricsListen) {
		log.Warn("metrics are reachable from the network: metrics-listen is not a loopback address; "+
			"firewall it or bind 127.0.0.1", "metrics-listen", c.metricsListen)
	}
	for _, w := range envWarnings(os.Environ()) {
		log.Warn(w)
	}
	if n, lim, ok := transport.AutoMaxConns(); c.limits.MaxConns > n && ok {
		log.Warn("max-conns is above what the open-file limit allows: connections past it are refused "+
			"when descriptors run out (raise LimitNOFILE / ulimit -n, or lower max-conns)",
			"max-conns", c.limits.MaxConns, "open-file-limit", lim, "usable", n)
	}
	logCreation(c, log)
}

// logCreation says who may create queues, when not everyone may: at start
// and on every reload. It gives the number of creator keys, not the keys.
func logCreation(c *config, log *slog.Logger) {
	if c.newQueues == "off" {
		log.Info("new-queues off: every NEW gets ERR AUTH")
	}
	if c.creatorKeySet == nil {
		return
	}
	if len(c.creatorKeySet) == 0 {
		log.Warn("creator-keys holds no key: every NEW gets ERR AUTH", "creator-keys", c.creatorKeys)
		return
	}
	log.Info("creator keys in force: NEW must be signed by one of them", "creator-keys", c.creatorKeys, "keys", len(c.creatorKeySet))
}

// bind binds the relay's address (--listen). It logs why it failed when it
// returns false.
func (d *daemon) bind() (net.Listener, bool) {
	ln, err := transport.Listen(d.cfg.listen)
	if err != nil {
		d.log.Error("cannot listen: is another relay or program using this address? (see --listen)", "err", err)
		return nil, false
	}
	return ln, true
}

// lockDataDir creates the data directory if needed and locks it: one server
// per data directory, and the kernel releases the lock when the process
// ends, however it ends. It logs why it failed when it returns false.
func (d *daemon) lockDataDir() (*wal.DirLock, bool) {
	dir, log := d.cfg.data, d.log
	if err := checkDataDir(dir); err != nil {
		log.Error("data directory", "err", err)
		return nil, false
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		log.Error("creating the data directory", "err", err)
		return nil, false
	}
	l, err := wal.LockDir(dir)
	if err != nil {
		log.Error("locking the data directory", "err", err)
		return nil, false
	}
	return l, true
}

// loadKey reads the server key, or creates one, and writes its fingerprint
// to DATA/fingerprint. It logs why it failed when it returns false.
func (d *daemon) loadKey() bool {
	c, log := d.cfg, d.log
	key, created, err := loadOrCreateKey(c.data, c.keyType)
	if err != nil {
		log.Error("server key", "err", err)
		return false
	}
	if !created && key.Public().Type().String() != c.keyType {
		log.Info("using the existing server key; key-type applies only when a key is created",
			"key-type", key.Public().Type().String())
	}
	fp := key.Public().Fingerprint()
	if err := atomicfile.Write(filepath.Join(c.data, "fingerprint"), []byte(fp+"\n"), 0o600); err != nil {
		log.Error("writing the fingerprint", "err", err)
		return false
	}
	d.key, d.fp = key, fp
	return true
}

// open opens the store (replaying the log), and makes the engine on it and
// the server for the engine. It logs why it failed when it returns false,
// with the store closed.
func (d *daemon) open() bool {
	c, log := d.cfg, d.log
	st, err := openStore(c, log)
	if err != nil {
		log.Error("opening the store", "err", err)
		return false
	}
	e, err := engine.New(engine.Options{
		Store:         st,
		BlockSize:     c.blockSize,
		Limits:        c.engineLimits(),
		Logger:        log,
		LogClientData: d.debugLog,
	})
	if err != nil {
		log.Error("starting the engine", "err", err)
		st.Close()
		return false
	}
	srv, err := transport.NewServer(transport.ServerOptions{
		Engine: e, Key: d.key, HandshakeTimeout: c.handshakeTimeout, Logger: log, LogClientData: d.debugLog,
		Limits: c.connLimits(),
	})
	if err != nil {
		log.Error("starting the server", "err", err)
		st.Close()
		return false
	}
	if as, ok := st.(syncAttacher); ok && c.fsyncIOUring != "off" {
		nc, readable, detach, err := as.AttachSyncs()
		if err != nil {
			log.Info("fsyncs block the writer: no io_uring", "err", err)
		} else {
			srv.AddCompanion(nc, readable, detach)
		}
	}
	d.store, d.e, d.srv = st, e, srv
	// Replay decoded every record of the log, which is garbage now: collect
	// it and give the memory back at once, so that the relay's RSS from the
	// start is its live state, not the size of its log.
	debug.FreeOSMemory()
	return true
}

// serveUntilDrained runs the event loops on ln until they stop, with the
// signal goroutine and the engine's TTL sweep beside them, and returns
// Serve's error once both have finished (the signal goroutine having
// logged). r is the configuration in force at the start.
func (d *daemon) serveUntilDrained(ln net.Listener, r *resolved, sigs <-chan os.Signal, stdout io.Writer) error {
	served := make(chan struct{})    // closed once Serve has returned
	sigDone := make(chan struct{})   // closed once the signal goroutine has finished
	sweepDone := make(chan struct{}) // closed once the TTL sweep has stopped
	go func() {
		defer close(sigDone)
		d.handleSignals(sigs, served, r)
	}()
	go func() {
		defer close(sweepDone)
		d.e.RunExpiry(expireEvery, served)
	}()
	// The admin socket is a convenience, not the relay's service: a data
	// directory where it cannot be made (a path too long for a socket, a
	// file system without sockets) runs without it.
	admin, err := startAdmin(d)
	if err != nil {
		d.log.Warn("admin socket not available: smp-server admin cannot reach this relay", "err", err)
	}
	err = d.srv.ServeListener(ln, func(addr net.Addr) { d.ready(addr, stdout) })
	if admin != nil {
		admin.close()
	}
	close(served)
	<-sigDone
	<-sweepDone
	return err
}

// expireEvery is how often the TTL sweep runs: the TTLs are hours and days,
// so a minute late is nothing, and a sweep visits every queue.
const expireEvery = time.Minute

// handleSignals runs on the signal goroutine until Serve has returned:
// SIGHUP reloads the configuration, of which it holds the one in force
// (cur), and SIGTERM or SIGINT drains the relay.
func (d *daemon) handleSignals(sigs <-chan os.Signal, served <-chan struct{}, cur *resolved) {
	for {
		select {
		case <-served:
			return
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				d.limitsMu.Lock()
				// A reload sets new-queues from the configuration again,
				// ending an admin new-queues override.
				d.newQueuesOverride = ""
				cur = reload(cur, d.sf, d.e, d.srv, d.store, &d.level, d.debugLog, d.log)
				d.creatorKeysPath = cur.cfg.creatorKeys
				d.limitsMu.Unlock()
				continue
			}
			drain(d.srv, sig, cur.cfg.drainTimeout, sigs, d.log)
			return
		}
	}
}

// ready runs on gnet's boot goroutine once the relay accepts connections: it
// starts the metrics endpoint, then logs "relay started" and prints the
// listening line. When the metrics endpoint cannot start, the relay stops
// without either.
func (d *daemon) ready(addr net.Addr, stdout io.Writer) {
	c := d.cfg
	keyType := d.key.Public().Type().String()
	if c.metricsListen != "" {
		src := metricsSource{Engine: d.e, Server: d.srv, KeyType: keyType, Draining: d.srv.Draining}
		if rep, ok := d.store.(store.StatsReporter); ok {
			src.Store = rep
		}
		bound, stop, err := startMetrics(c.metricsListen, src, d.log)
		if err != nil {
			d.metricsErr = fmt.Errorf("metrics-listen %s: %w", c.metricsListen, err)
			go d.srv.Shutdown(context.Background())
			return
		}
		d.stopMetrics = stop
		defer fmt.Fprintf(stdout, "smp-server: metrics on %s\n", bound)
	}
	d.log.Info("relay started", "fingerprint", d.fp, "key-type", keyType,
		"block-size", c.blockSize, "store", c.store, "fsync", fsyncLabel(c))
	// SPEC §11: tools wait for this exact line; stdout is unbuffered.
	fmt.Fprintf(stdout, "smp-server: listening on %s\n", addr)
}

// stop stops the metrics endpoint and closes the store once Serve has
// returned serveErr, and returns the exit code: 1 when anything failed.
func (d *daemon) stop(serveErr error) int {
	log := d.log
	if d.stopMetrics != nil {
		if err := d.stopMetrics(context.Background()); err != nil {
			log.Warn("stopping the metrics endpoint", "err", err)
		}
	}
	// SPEC §11: the log is flushed (and fsynced) before the process exits.
	closeErr := d.store.Close()
	switch {
	case d.metricsErr != nil:
		log.Error("starting the metrics endpoint", "err", d.metricsErr)
		return 1
	case serveErr != nil:
		log.Error("serving", "err", serveErr)
		return 1
	case closeErr != nil:
		log.Error("flushing the log", "err", closeErr)
		return 1
	}
	log.Info("stopped")
	return 0
}

// drain stops the relay without losing a reply (transport.Server.Drain), within
// timeout; a second SIGTERM or SIGINT cuts it short. Runs on the signal
// goroutine; Serve returns once it is done.
func drain(srv *transport.Server, sig os.Signal, d time.Duration, sigs <-chan os.Signal, log *slog.Logger) {
	log.Info("draining: new connections are refused; answering what is in flight", "signal", sig.String(), "drain-timeout", d.String())
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	res := make(chan error, 1)
	go func() { res <- srv.Drain(ctx) }()
	for {
		select {
		case err := <-res:
			if err != nil {
				log.Warn("drain incomplete", "err", err)
			} else {
				log.Info("drained")
			}
			return
		case s := <-sigs:
			if s != syscall.SIGHUP {
				log.Warn("second signal: closing connections now", "signal", s.String())
				cancel()
			}
		}
	}
}

// reload re-reads the config file and the environment (the command line's
// flags still win), applies the live options and keeps the others as they
// run, logging what changed and what needs a restart. An invalid
// configuration is logged and ignored. Runs on the signal goroutine.
func reload(cur *resolved, sf startFlags, e *engine.Engine, srv *transport.Server, st store.Store, level *slog.LevelVar, startedDebug bool, log *slog.Logger) *resolved {
	next, err := resolve(sf, osEnv, readConfigFile)
	if err != nil {
		log.Error("reload: configuration rejected; the relay keeps its current one", "err", strings.ReplaceAll(err.Error(), "\n", "; "))
		return cur
	}
	live, restart := changes(cur, next)
	m := &resolved{settings: make([]setting, len(options)), configPath: next.configPath, configSeen: next.configSeen}
	for i := range options {
		m.settings[i] = next.settings[i]
		if !options[i].live {
			m.settings[i] = cur.settings[i]
		}
		options[i].set(&m.cfg, m.settings[i].raw) // each value passed its own resolution
	}
	m.cfg.creatorKeySet = next.cfg.creatorKeySet // creator-keys is live: its file as read just now
	if m.cfg.limits.MaxOutbound < m.cfg.blockSize {
		log.Error("reload: configuration rejected; the relay keeps its current one",
			"err", fmt.Sprintf("max-outbound %d is less than the running block-size %d", m.cfg.limits.MaxOutbound, m.cfg.blockSize))
		return cur
	}
	if err := e.SetLimits(m.cfg.engineLimits()); err != nil {
		log.Error("reload: configuration rejected; the relay keeps its current one", "err", err)
		return cur
	}
	srv.SetConnLimits(m.cfg.connLimits())
	if cs, ok := st.(cacheSizer); ok {
		if err := cs.SetCacheBytes(m.cfg.cacheSize); err != nil {
			log.Error("reload: cache-size not applied", "err", err)
		}
	}
	changed := "nothing"
	if len(live) > 0 {
		changed = strings.Join(live, ", ")
	}
	log.Info("reloaded configuration", "changed", changed)
	logCreation(&m.cfg, log)
	if m.cfg.logLevel == "debug" && !startedDebug {
		log.Info("log-level debug: client data is logged only by a relay started at debug")
	}
	if len(restart) > 0 {
		log.Warn("reload: changed options that take effect only after a restart", "options", strings.Join(restart, ", "))
	}
	// Last, so that the lines above are logged at the level they were sent under.
	level.Set(parseLevel(m.cfg.logLevel))
	return m
}

// initCmd creates the data directory, the transport key and a config file
// listing every option with its value (flags and SMP_ variables given to init
// are written in; the rest are defaults). It never overwrites a key or a
// config file.
func initCmd(args []string, stdout, stderr io.Writer) int {
	sf, r, code := configure("init", args, stderr, nil)
	if code >= 0 {
		return code
	}
	c := &r.cfg
	data, err := filepath.Abs(c.data)
	if err != nil {
		fmt.Fprintf(stderr, "smp-server: data directory: %v\n", err)
		return 1
	}
	r.settings[optionIndex("data")].raw = data
	if err := checkDataDir(data); err != nil {
		fmt.Fprintf(stderr, "smp-server: %v\n", err)
		return 1
	}
	keyPath := filepath.Join(data, keyFile)
	for _, p := range []string{keyPath, r.configPath} {
		if _, err := os.Lstat(p); err == nil {
			why := "remove it first if you mean to replace it"
			if p == keyPath {
				why = "a new key would invalidate every invitation that names this relay"
			}
			fmt.Fprintf(stderr, "smp-server: %s exists; init never overwrites it (%s)\n", p, why)
			return 1
		} else if !errors.Is(err, fs.ErrNotExist) {
			fmt.Fprintf(stderr, "smp-server: %v\n", err)
			return 1
		}
	}
	if err := os.MkdirAll(filepath.Dir(r.configPath), 0o700); err != nil {
		fmt.Fprintf(stderr, "smp-server: creating the config directory: %v\n", err)
		return 1
	}
	// O_EXCL: a config that appeared since the check above is not overwritten.
	f, err := os.OpenFile(r.configPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		fmt.Fprintf(stderr, "smp-server: writing the config file: %v\n", err)
		return 1
	}
	_, werr := f.Write(configText(r))
	if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
		os.Remove(r.configPath)
		fmt.Fprintf(stderr, "smp-server: writing the config file: %v\n", err)
		return 1
	}
	key, _, err := loadOrCreateKey(data, c.keyType)
	if err != nil {
		os.Remove(r.configPath)
		fmt.Fprintf(stderr, "smp-server: %v\n", err)
		return 1
	}
	fp := key.Public().Fingerprint()
	if err := atomicfile.Write(filepath.Join(data, "fingerprint"), []byte(fp+"\n"), 0o600); err != nil {
		fmt.Fprintf(stderr, "smp-server: writing the fingerprint: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "smp-server: created %s (%s key, fingerprint %s)\n", keyPath, c.keyType, fp)
	fmt.Fprintf(stdout, "smp-server: wrote %s\n", r.configPath)
	startArgs := "--data " + data
	if sf.config != "" {
		startArgs = "--config " + r.configPath
	}
	fmt.Fprintf(stdout, "next: smp-server start %s\n", startArgs)
	return 0
}

// configText is the config file init writes: a header, then every option
// with its help as a comment, whether it is live, its variable, and its value.
func configText(r *resolved) []byte {
	var b strings.Builder
	b.WriteString(`# smp-server configuration, written by "smp-server init" (` + buildVersion() + `).
#
# One option per line: key = value. Strings and durations go in double
# quotes (durations in Go syntax: "30s", "10m", "504h"); integers are bare.
# Every option is also a flag (--key) and an environment variable (SMP_ and
# the key in upper case, '-' as '_'): a flag wins over the environment,
# which wins over this file, which wins over the default.
# Options marked "live" are re-read on SIGHUP (systemctl reload); the others
# need a restart. "smp-server start --print-config" shows what is in force.
`)
	for i := range options {
		o := &options[i]
		b.WriteString("\n")
		for _, l := range strings.Split(o.usage, "\n") {
			b.WriteString("# " + l + "\n")
		}
		when := "restart"
		if o.live {
			when = "live"
		}
		fmt.Fprintf(&b, "# (%s; env %s; default %s)\n", when, o.envName(), formatValue(o.kind, o.def))
		fmt.Fprintf(&b, "%s = %s\n", o.name, formatValue(o.kind, r.settings[i].raw))
	}
	return []byte(b.String())
}

// fingerprintCmd prints the server key's fingerprint and the server line of
// an invitation (SPEC §9: host[:port], the port left out when it is 5223).
func fingerprintCmd(args []string, stdout, stderr io.Writer) int {
	sf, r, code := configure("fingerprint", args, stderr, readConfigFile)
	if code >= 0 {
		return code
	}
	if err := checkDataDir(r.cfg.data); err != nil {
		fmt.Fprintf(stderr, "smp-server: %v\n", err)
		return 1
	}
	key, err := readKey(filepath.Join(r.cfg.data, keyFile))
	if errors.Is(err, fs.ErrNotExist) {
		fmt.Fprintf(stderr, "smp-server: no server key in %s: run smp-server init (or start) first\n", r.cfg.data)
		return 1
	}
	if err != nil {
		fmt.Fprintf(stderr, "smp-server: %v\n", err)
		return 1
	}
	if sf.quiet {
		fmt.Fprintln(stdout, key.Public().Fingerprint())
		return 0
	}
	server, err := serverLine(sf.host, r.cfg.listen)
	if err != nil {
		fmt.Fprintf(stderr, "smp-server: %v\n", err)
		return 2
	}
	fmt.Fprintf(stdout, "fingerprint: %s\nserver: %s\n", key.Public().Fingerprint(), server)
	return 0
}

// serverLine is host[:port] as an invitation names the relay (SPEC §9). host
// is --host (NAME or NAME:PORT); without it the host of listen is used unless
// it is a wildcard address. The port comes from host, else from listen, and
// is left out when it is the default 5223.
func serverLine(host, listen string) (string, error) {
	lh, lp, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("listen %q: must be HOST:PORT", listen)
	}
	port := lp
	switch {
	case host == "":
		if ip := net.ParseIP(lh); lh == "" || ip != nil && ip.IsUnspecified() {
			return "", fmt.Errorf("the relay listens on every address (%s): give --host with the name or address clients use", listen)
		}
		host = lh
	case strings.Count(host, ":") == 1 || strings.HasPrefix(host, "["):
		h, p, err := net.SplitHostPort(host)
		if err != nil {
			return "", fmt.Errorf("--host %q: must be NAME or NAME:PORT", host)
		}
		host, port = h, p
	}
	if host == "" || strings.ContainsAny(host, " \t/@#") {
		return "", fmt.Errorf("--host %q: must be a hostname or an IP address", host)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("port %q: must be from 1 to 65535 (listen has port 0: give --host NAME:PORT)", port)
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if n == codec.DefaultPort {
		return host, nil
	}
	return host + ":" + port, nil
}

// revision is the commit the binary was built from, set by make build
// (-ldflags "-X main.revision=..."): the go command records it only when
// VCS stamping is on, and GOFLAGS=-buildvcs=false turns that off.
var revision string

// versionCmd prints the module version and VCS state the binary was built
// from, the Go version and the protocol version.
func versionCmd(stdout io.Writer) int {
	fmt.Fprintf(stdout, "smp-server %s\n", buildVersion())
	if revision != "" {
		fmt.Fprintf(stdout, "revision %s\n", revision)
	} else if bi, ok := debug.ReadBuildInfo(); ok {
		var rev, modified string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					modified = " (modified)"
				}
			}
		}
		if rev != "" {
			fmt.Fprintf(stdout, "revision %s%s\n", rev, modified)
		}
	}
	fmt.Fprintf(stdout, "go %s\n", runtime.Version())
	fmt.Fprintf(stdout, "protocol SMP/1, transport version %d\n", codec.TransportVersion)
	return 0
}

// profileMode maps --profile to a pkg/profile option.
func profileMode(s string) (func(*profile.Profile), error) {
	switch s {
	case "", "cpu":
		return profile.CPUProfile, nil
	case "mem":
		return profile.MemProfile, nil
	case "block":
		return profile.BlockProfile, nil
	case "mutex":
		return profile.MutexProfile, nil
	}
	return nil, fmt.Errorf("profile %q: must be cpu, mem, block or mutex", s)
}

// openStore opens the store the store option names: disk in DATA/wal and
// DATA/bodies, wal in DATA/wal.
func openStore(c *config, log *slog.Logger) (store.Store, error) {
	if c.store == "memory" {
		return store.MemoryStore{}, nil
	}
	mode, err := wal.ParseSyncMode(c.fsync)
	if err != nil {
		return nil, err
	}
	lo := wal.Options{Sync: mode, SyncInterval: c.fsyncInterval, Logger: log}
	if c.store == "disk" {
		return diskstore.Open(c.data, diskstore.Options{Log: lo, CacheBytes: c.cacheSize, Logger: log})
	}
	l, err := wal.Open(filepath.Join(c.data, diskstore.WALDir), lo)
	if err != nil {
		return nil, err
	}
	return l, nil
}

// syncAttacher is a store whose writer can fsync through io_uring, woken by
// an event loop (wal.Log.AttachSyncs).
type syncAttacher interface {
	AttachSyncs() (nc net.Conn, readable, detach func(), err error)
}

// cacheSizer is a store with a body cache whose bound reloads live.
type cacheSizer interface{ SetCacheBytes(n int64) error }

// fsyncLabel is the durability the relay runs with, for the start-up line.
func fsyncLabel(c *config) string {
	switch {
	case c.store == "memory":
		return "none (memory store: nothing survives a restart)"
	case c.fsync == "interval":
		return "interval " + c.fsyncInterval.String()
	}
	return c.fsync
}

// checkDataDir reports a data path that exists but is not a directory, which
// os.MkdirAll would only report as "not a directory" of some path.
func checkDataDir(dir string) error {
	fi, err := os.Stat(dir)
	if err == nil && !fi.IsDir() {
		return fmt.Errorf("%s is a file, not a directory: give --data a directory (it is created if absent)", dir)
	}
	return nil
}

// keyFile is the server transport key in the data directory: one PEM block
// whose bytes are codec.KEMPrivateKey.MarshalBinary (type byte, then the key).
const (
	keyFile  = "server.key"
	pemLabel = "SMP SERVER KEY"
)

// loadOrCreateKey reads DIR/server.key, or creates DIR (0700) and a new key of
// kind keyType (0600) when there is none.
func loadOrCreateKey(dir, keyType string) (*codec.KEMPrivateKey, bool, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, false, fmt.Errorf("creating data directory: %w", err)
	}
	path := filepath.Join(dir, keyFile)
	k, err := readKey(path)
	if err == nil {
		return k, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, err
	}
	t, err := codec.ParseKEMType(keyType)
	if err != nil {
		return nil, false, err
	}
	k, err = codec.GenerateKEMKey(t)
	if err != nil {
		return nil, false, fmt.Errorf("generating a %s key: %w", keyType, err)
	}
	der, err := k.MarshalBinary()
	if err != nil {
		return nil, false, err
	}
	if err := atomicfile.Write(path, pem.EncodeToMemory(&pem.Block{Type: pemLabel, Bytes: der}), 0o600); err != nil {
		return nil, false, fmt.Errorf("writing server key: %w", err)
	}
	return k, true, nil
}

// readKey reads a server key file; a missing file is fs.ErrNotExist.
func readKey(path string) (*codec.KEMPrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading server key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != pemLabel {
		return nil, fmt.Errorf("%s: not a %q PEM block", path, pemLabel)
	}
	k, err := codec.ParseKEMPrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}
