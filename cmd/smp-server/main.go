// Command smp-server runs an SMP relay (SPEC §11):
//
//	smp-server start --data DIR --listen HOST:PORT [flags]
//
// It creates DIR and a server transport key when they are absent, writes the
// key's fingerprint to DIR/fingerprint, prints "listening on HOST:PORT" once
// it accepts connections, and on SIGTERM or SIGINT stops and exits 0.
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
	"syscall"
	"time"

	"github.com/pkg/profile"
	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/engine"
	"github.com/smprelay/smprelay/wal"
)

const usage = `smp-server runs a Simplex Messaging Protocol relay.

Usage:
  smp-server start [flags]   start the relay (creates the data directory and key if absent)
  smp-server help            show this help

Run 'smp-server start -h' for the flags of start.
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
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "smp-server: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}

// config is what start's flags say.
type config struct {
	data             string
	listen           string
	blockSize        int
	fsync            string
	fsyncInterval    time.Duration
	store            string
	quota            int
	messageTTL       time.Duration
	suspendedTTL     time.Duration
	handshakeTimeout time.Duration
	keyType          string
	logLevel         string
	limits           engine.ConnLimits
	newPerMinute     int
	profile          string // cpu, mem, block, mutex or empty
	profileDir       string
}

func parseStart(args []string, stderr io.Writer) (config, error) {
	var c config
	fl := flag.NewFlagSet("smp-server start", flag.ContinueOnError)
	fl.SetOutput(stderr)
	fl.StringVar(&c.data, "data", "data", "data `directory`: server key, fingerprint, the log in wal/ (created 0700 if absent)")
	fl.StringVar(&c.listen, "listen", "0.0.0.0:5223", "TCP `address` to listen on, HOST:PORT (PORT 0 picks a free port)")
	fl.IntVar(&c.blockSize, "block-size", codec.DefaultBlockSize, "transport block `bytes`: a power of two from 4096 to 65536")
	fl.StringVar(&c.store, "store", "wal", "where state is kept: wal (a write-ahead log in DIR/wal: queues and messages\n"+
		"survive restarts and crashes) or memory (nothing survives a restart)")
	fl.StringVar(&c.fsync, "fsync", "always", "durability of the wal store:\n"+
		"always    a NEW/KEY/OFF/DEL/SEND/ACK is answered only once its log record is fsynced\n"+
		"          (group commit): kill -9 or power loss loses nothing that was answered\n"+
		"interval  answer at once, fsync every --fsync-interval: kill -9 loses at most what\n"+
		"          was not yet written (microseconds); power loss up to the last interval\n"+
		"never     answer at once, never fsync while running (only at compaction and\n"+
		"          shutdown): kill -9 loses at most what was not yet written; power loss\n"+
		"          anything the kernel had not written back")
	fl.DurationVar(&c.fsyncInterval, "fsync-interval", wal.DefaultSyncInterval, "how often --fsync interval fsyncs the log")
	fl.IntVar(&c.quota, "quota", engine.DefaultLimits.Quota, "messages a queue may hold before SEND gets ERR QUOTA")
	fl.DurationVar(&c.messageTTL, "message-ttl", engine.DefaultLimits.MessageTTL, "delete stored messages older than this")
	fl.DurationVar(&c.suspendedTTL, "suspended-ttl", engine.DefaultLimits.SuspendedTTL, "delete queues suspended (OFF) for longer than this")
	fl.DurationVar(&c.handshakeTimeout, "handshake-timeout", 10*time.Second, "close connections whose client hello is not complete by then")
	fl.StringVar(&c.keyType, "key-type", "mlkem768x25519", "transport key kind when the key is created: mlkem768x25519, x25519 or rsa")
	fl.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error; only debug logs client data (IDs, addresses, commands)")
	d := engine.DefaultConnLimits
	fl.IntVar(&c.limits.MaxConns, "max-conns", 0, "open connections at most; 0 means the open-file limit less 64")
	fl.DurationVar(&c.limits.IdleTimeout, "idle-timeout", d.IdleTimeout, "close connections that send no block for this long (clients PING to stay)")
	fl.IntVar(&c.limits.MaxOutbound, "max-outbound", d.MaxOutbound, "`bytes` waiting for a client that does not read before it is disconnected")
	fl.IntVar(&c.limits.BlocksPerSecond, "blocks-per-second", d.BlocksPerSecond, "blocks read from one connection per second; more wait, and a client\n"+
		"that piles up 256 waiting blocks is disconnected")
	fl.IntVar(&c.newPerMinute, "new-queues-per-minute", engine.DefaultLimits.NewQueuesPerMinute, "NEW commands per connection per minute; more get ERR QUOTA")
	fl.StringVar(&c.profile, "profile", "", "write a `kind` of Go profile while running: cpu, mem, block or mutex\n"+
		"(for explaining a slow benchmark; costs speed, off in production)")
	fl.StringVar(&c.profileDir, "profile-dir", ".", "`directory` --profile writes its file to (cpu.pprof, mem.pprof, ...)")
	fl.Usage = func() {
		fmt.Fprintf(stderr, "Usage: smp-server start [flags]\n\nFlags:\n")
		fl.PrintDefaults()
	}
	if err := fl.Parse(args); err != nil {
		return c, err
	}
	if fl.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fl.Arg(0))
	}
	switch {
	case !codec.ValidBlockSize(c.blockSize):
		return c, fmt.Errorf("--block-size %d: must be a power of two from %d to %d", c.blockSize, codec.MinBlockSize, codec.MaxBlockSize)
	case c.fsync != "always" && c.fsync != "interval" && c.fsync != "never":
		return c, fmt.Errorf("--fsync %q: must be always, interval or never", c.fsync)
	case c.fsyncInterval <= 0:
		return c, fmt.Errorf("--fsync-interval %s: must be positive", c.fsyncInterval)
	case c.store != "wal" && c.store != "memory":
		return c, fmt.Errorf("--store %q: must be wal or memory", c.store)
	case c.quota <= 0:
		return c, fmt.Errorf("--quota %d: must be at least 1", c.quota)
	case c.messageTTL <= 0:
		return c, fmt.Errorf("--message-ttl %s: must be positive", c.messageTTL)
	case c.suspendedTTL <= 0:
		return c, fmt.Errorf("--suspended-ttl %s: must be positive", c.suspendedTTL)
	case c.handshakeTimeout <= 0:
		return c, fmt.Errorf("--handshake-timeout %s: must be positive", c.handshakeTimeout)
	case c.limits.MaxConns < 0:
		return c, fmt.Errorf("--max-conns %d: must be 0 (automatic) or more", c.limits.MaxConns)
	case c.limits.IdleTimeout <= 0:
		return c, fmt.Errorf("--idle-timeout %s: must be positive", c.limits.IdleTimeout)
	case c.limits.MaxOutbound < c.blockSize:
		return c, fmt.Errorf("--max-outbound %d: must be at least one block (%d bytes)", c.limits.MaxOutbound, c.blockSize)
	case c.limits.BlocksPerSecond <= 0:
		return c, fmt.Errorf("--blocks-per-second %d: must be at least 1", c.limits.BlocksPerSecond)
	case c.newPerMinute <= 0:
		return c, fmt.Errorf("--new-queues-per-minute %d: must be at least 1", c.newPerMinute)
	}
	if _, err := codec.ParseKEMType(c.keyType); err != nil {
		return c, fmt.Errorf("--key-type %q: must be mlkem768x25519, x25519 or rsa", c.keyType)
	}
	if _, _, err := net.SplitHostPort(c.listen); err != nil {
		return c, fmt.Errorf("--listen %q: must be HOST:PORT", c.listen)
	}
	if _, err := parseLevel(c.logLevel); err != nil {
		return c, err
	}
	if _, err := profileMode(c.profile); err != nil {
		return c, err
	}
	return c, nil
}

func parseLevel(s string) (slog.Level, error) {
	switch s {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("--log-level %q: must be debug, info, warn or error", s)
}

func start(args []string, stdout, stderr io.Writer) int {
	c, err := parseStart(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "smp-server: %v\n", err)
		return 2
	}
	// Caught from here on: a SIGTERM during a long log replay still ends in
	// an orderly stop (the server shuts down as soon as it is up).
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	level, _ := parseLevel(c.logLevel)
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if c.profile != "" {
		mode, _ := profileMode(c.profile)
		// Stopped (and the file written) on every return of start, after the
		// log is flushed; NoShutdownHook leaves SIGINT/SIGTERM to the drain.
		defer profile.Start(mode, profile.ProfilePath(c.profileDir), profile.NoShutdownHook, profile.Quiet).Stop()
		log.Warn("profiling is on: the relay runs slower", "profile", c.profile, "dir", c.profileDir)
	}
	debug := level == slog.LevelDebug
	if debug {
		log.Warn("debug logging is on: client data (queue IDs, addresses, commands) will be logged; do not use in production")
	}

	// One server per data directory: the lock is released by the kernel
	// when the process ends, however it ends.
	if err := os.MkdirAll(c.data, 0o700); err != nil {
		log.Error("creating the data directory", "err", err)
		return 1
	}
	dirLock, err := wal.LockDir(c.data)
	if err != nil {
		log.Error("locking the data directory", "err", err)
		return 1
	}
	defer dirLock.Unlock()

	key, created, err := loadOrCreateKey(c.data, c.keyType)
	if err != nil {
		log.Error("server key", "err", err)
		return 1
	}
	if !created && key.Public().Type().String() != c.keyType {
		log.Info("using the existing server key; --key-type applies only when a key is created",
			"key-type", key.Public().Type().String())
	}
	fp := key.Public().Fingerprint()
	if err := writeFileAtomic(filepath.Join(c.data, "fingerprint"), []byte(fp+"\n"), 0o600); err != nil {
		log.Error("writing the fingerprint", "err", err)
		return 1
	}

	store, err := openStore(c, log)
	if err != nil {
		log.Error("opening the store", "err", err)
		return 1
	}
	e, err := engine.New(engine.Options{
		Store:     store,
		BlockSize: c.blockSize,
		Limits: engine.Limits{Quota: c.quota, MessageTTL: c.messageTTL, SuspendedTTL: c.suspendedTTL,
			NewQueuesPerMinute: c.newPerMinute},
		Logger:        log,
		LogClientData: debug,
	})
	if err != nil {
		log.Error("starting the engine", "err", err)
		store.Close()
		return 1
	}
	srv, err := engine.NewServer(engine.ServerOptions{
		Engine: e, Key: key, HandshakeTimeout: c.handshakeTimeout, Logger: log, LogClientData: debug,
		Limits: c.limits,
	})
	if err != nil {
		log.Error("starting the server", "err", err)
		store.Close()
		return 1
	}

	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			log.Error("shutting down", "err", err)
		}
	}()

	err = srv.Serve(c.listen, func(addr net.Addr) {
		log.Info("relay started", "fingerprint", fp, "key-type", key.Public().Type().String(),
			"block-size", c.blockSize, "store", c.store, "fsync", fsyncLabel(c))
		// SPEC §11: tools wait for this exact line; stdout is unbuffered.
		fmt.Fprintf(stdout, "smp-server: listening on %s\n", addr)
	})
	// SPEC §11: the log is flushed (and fsynced) before the process exits.
	closeErr := store.Close()
	if err != nil {
		log.Error("serving", "err", err)
		return 1
	}
	if closeErr != nil {
		log.Error("flushing the log", "err", closeErr)
		return 1
	}
	log.Info("stopped")
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
	return nil, fmt.Errorf("--profile %q: must be cpu, mem, block or mutex", s)
}

// openStore opens the store --store names. The wal lives in DIR/wal.
func openStore(c config, log *slog.Logger) (engine.Store, error) {
	if c.store == "memory" {
		return engine.MemoryStore{}, nil
	}
	mode, err := wal.ParseSyncMode(c.fsync)
	if err != nil {
		return nil, err
	}
	return wal.Open(filepath.Join(c.data, "wal"), wal.Options{Sync: mode, SyncInterval: c.fsyncInterval, Logger: log})
}

// fsyncLabel is the durability the relay runs with, for the start-up line.
func fsyncLabel(c config) string {
	switch {
	case c.store == "memory":
		return "none (memory store: nothing survives a restart)"
	case c.fsync == "interval":
		return "interval " + c.fsyncInterval.String()
	}
	return c.fsync
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
	b, err := os.ReadFile(path)
	if err == nil {
		blk, _ := pem.Decode(b)
		if blk == nil || blk.Type != pemLabel {
			return nil, false, fmt.Errorf("%s: not a %q PEM block", path, pemLabel)
		}
		k, err := codec.ParseKEMPrivateKey(blk.Bytes)
		if err != nil {
			return nil, false, fmt.Errorf("%s: %w", path, err)
		}
		return k, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, fmt.Errorf("reading server key: %w", err)
	}
	t, err := codec.ParseKEMType(keyType)
	if err != nil {
		return nil, false, err
	}
	k, err := codec.GenerateKEMKey(t)
	if err != nil {
		return nil, false, fmt.Errorf("generating a %s key: %w", keyType, err)
	}
	der, err := k.MarshalBinary()
	if err != nil {
		return nil, false, err
	}
	if err := writeFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: pemLabel, Bytes: der}), 0o600); err != nil {
		return nil, false, fmt.Errorf("writing server key: %w", err)
	}
	return k, true, nil
}

// writeFileAtomic writes b to a temporary file, syncs it and renames it over
// path, so a crash leaves either the old file or the new one.
func writeFileAtomic(path string, b []byte, mode fs.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
