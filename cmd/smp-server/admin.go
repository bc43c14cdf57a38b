package main

// The local admin interface (issue 16): a Unix socket, DATA/admin.sock, and
// the "smp-server admin" command that talks to it.
//
// Access: only the socket's file permission guards it. It is created 0600
// in the data directory (itself 0700), so only the relay's own user (and
// root, which file permissions do not stop) can connect; there is no token
// and nothing else is checked. Anyone who can read DATA/server.key can
// already do more than this interface allows.
//
// Protocol: one command per connection. The client writes one line (the
// command and its arguments separated by spaces, at most adminMaxLine
// bytes); the relay answers with text and closes. The answer's first line
// is "ok" or "error: WHY"; what follows "ok" is the command's output.
//
// The socket is served by one goroutine of its own (and one short-lived
// goroutine per connection), never on the event loops: an admin action
// takes the queue's lock as a command does (engine.Engine.Block), and
// waits for its records to be durable before it answers.
//
// Logging (docs/log-format.md): every command is logged at INFO with the
// action and its result, never a queue ID (SPEC §8: production logs carry
// no client data); a relay started at log-level debug adds the ID, at debug.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/engine"
	"github.com/smprelay/smprelay/internal/atomicfile"
	"github.com/smprelay/smprelay/store"
	"github.com/smprelay/smprelay/transport"
)

// adminSocket is the admin socket's name in the data directory.
const adminSocket = "admin.sock"

// adminMaxLine bounds a command line; adminTimeout bounds how long a
// connection may take to send it and read the answer (an action that waits
// for its records to be durable waits within engine's own bound).
const (
	adminMaxLine = 1024
	adminTimeout = time.Minute
)

// adminServer serves DATA/admin.sock. Its fields are set once by
// startAdmin, except those marked.
type adminServer struct {
	ln       *net.UnixListener
	path     string
	e        *engine.Engine
	srv      *transport.Server
	st       store.Store
	storeKnd string // the store option: memory, wal or disk
	fsync    string // the durability, as the start-up line gives it
	log      *slog.Logger
	debug    bool // started at log-level debug: the log may name queue IDs
	// limitsMu is the daemon's: held while the limits are read and replaced
	// (new-queues here, reload on the signal goroutine), so that neither
	// overwrites the other's change with a stale copy.
	limitsMu *sync.Mutex
	// override is what "new-queues on|off" set since the last reload or
	// start ("" when nothing): shown by status. Guarded by limitsMu.
	override *string
	// creatorKeys is the creator-keys file in force ("" when none), which
	// "creator-keys add|remove" edit. Guarded by limitsMu.
	creatorKeys *string
	wg          sync.WaitGroup // the accept loop and the connections it serves
}

// startAdmin creates DATA/admin.sock (0600), replacing a stale one (the
// data directory is locked, so no other relay serves it), and serves it on
// a goroutine of its own until close.
func startAdmin(d *daemon) (*adminServer, error) {
	path := filepath.Join(d.cfg.data, adminSocket)
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("removing a stale %s: %w", path, err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	// The socket is created with the process's umask; the data directory
	// (0700) keeps others out until this chmod, which makes it 0600.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	ln.SetUnlinkOnClose(true)
	a := &adminServer{ln: ln, path: path, e: d.e, srv: d.srv, st: d.store, storeKnd: d.cfg.store,
		fsync: fsyncLabel(d.cfg), log: d.log, debug: d.debugLog, limitsMu: &d.limitsMu, override: &d.newQueuesOverride,
		creatorKeys: &d.creatorKeysPath}
	a.wg.Add(1)
	go a.accept()
	return a, nil
}

// close stops accepting, waits for the connections being served and removes
// the socket.
func (a *adminServer) close() {
	a.ln.Close()
	a.wg.Wait()
}

func (a *adminServer) accept() {
	defer a.wg.Done()
	for {
		c, err := a.ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				a.log.Warn("admin socket: accept", "err", err)
				continue
			}
			return
		}
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			a.serve(c)
		}()
	}
}

// serve reads one command from c, carries it out and answers.
func (a *adminServer) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(adminTimeout))
	line, err := bufio.NewReaderSize(io.LimitReader(c, adminMaxLine+1), adminMaxLine+1).ReadString('\n')
	if err != nil && !(errors.Is(err, io.EOF) && line != "") {
		fmt.Fprintf(c, "error: a command is one line of at most %d bytes\n", adminMaxLine)
		return
	}
	out, err := a.do(strings.Fields(line))
	if err != nil {
		fmt.Fprintf(c, "error: %v\n", err)
		return
	}
	fmt.Fprintf(c, "ok\n%s", out)
}

// do carries out one command and logs it (action and result, never an ID
// but at debug).
func (a *adminServer) do(args []string) (string, error) {
	if len(args) == 0 {
		return "", errors.New("no command (stats, status, block, unblock, delete, new-queues, compact, creator-keys)")
	}
	action := args[0]
	out, detail, err := a.run(args)
	attrs := []any{"action", action}
	if err != nil {
		attrs = append(attrs, "result", "error", "err", err)
	} else {
		attrs = append(attrs, "result", "ok")
		attrs = append(attrs, detail...)
	}
	a.log.Info("admin", attrs...)
	if a.debug && len(args) > 1 && (action == "block" || action == "unblock" || action == "delete") {
		a.log.Debug("admin", "action", action, "queue-id", args[1])
	}
	return out, err
}

// run carries out args and returns its output and the log attributes of
// its result (counts, never IDs).
func (a *adminServer) run(args []string) (out string, detail []any, err error) {
	cmd, rest := args[0], args[1:]
	need := func(min, max int, usage string) error {
		if len(rest) < min || len(rest) > max {
			return fmt.Errorf("usage: %s", usage)
		}
		return nil
	}
	switch cmd {
	case "stats":
		if err := need(0, 0, "stats"); err != nil {
			return "", nil, err
		}
		s, err := a.stats()
		return s, nil, err
	case "status":
		if err := need(0, 0, "status"); err != nil {
			return "", nil, err
		}
		return a.status(), nil, nil
	case "block":
		if err := need(1, 2, "block ID [drop]"); err != nil {
			return "", nil, err
		}
		drop := len(rest) == 2
		if drop && rest[1] != "drop" {
			return "", nil, errors.New("usage: block ID [drop]")
		}
		id, err := parseQueueID(rest[0])
		if err != nil {
			return "", nil, err
		}
		res, err := a.e.Block(id, drop)
		if err != nil {
			return "", nil, err
		}
		out = "blocked\n"
		if res.WasBlocked {
			out = "already blocked\n"
		}
		if drop {
			out += fmt.Sprintf("messages dropped: %d\n", res.Dropped)
		}
		return out, []any{"was-blocked", res.WasBlocked, "dropped", res.Dropped}, nil
	case "unblock":
		if err := need(1, 1, "unblock ID"); err != nil {
			return "", nil, err
		}
		id, err := parseQueueID(rest[0])
		if err != nil {
			return "", nil, err
		}
		was, err := a.e.Unblock(id)
		if err != nil {
			return "", nil, err
		}
		if !was {
			return "not blocked\n", []any{"was-blocked", false}, nil
		}
		return "unblocked\n", []any{"was-blocked", true}, nil
	case "delete":
		if err := need(1, 1, "delete ID"); err != nil {
			return "", nil, err
		}
		id, err := parseQueueID(rest[0])
		if err != nil {
			return "", nil, err
		}
		n, err := a.e.Delete(id)
		if err != nil {
			return "", nil, err
		}
		return fmt.Sprintf("deleted, with %d messages\n", n), []any{"messages", n}, nil
	case "new-queues":
		if err := need(1, 1, "new-queues on|off"); err != nil {
			return "", nil, err
		}
		if rest[0] != "on" && rest[0] != "off" {
			return "", nil, errors.New("usage: new-queues on|off")
		}
		if err := a.setNewQueues(rest[0] == "off"); err != nil {
			return "", nil, err
		}
		return "new-queues " + rest[0] + " until the next reload (SIGHUP) or restart\n", []any{"new-queues", rest[0]}, nil
	case "compact":
		if err := need(0, 0, "compact"); err != nil {
			return "", nil, err
		}
		c, ok := a.st.(store.Compactor)
		if !ok {
			return "", nil, fmt.Errorf("the %s store keeps no log to compact", a.storeKnd)
		}
		start := time.Now()
		if err := c.Compact(); err != nil {
			return "", nil, err
		}
		took := time.Since(start).Round(time.Millisecond)
		return fmt.Sprintf("compacted in %s\n", took), []any{"took", took.String()}, nil
	case "creator-keys":
		if err := need(2, 2, "creator-keys add|remove KEY"); err != nil {
			return "", nil, err
		}
		if rest[0] != "add" && rest[0] != "remove" {
			return "", nil, errors.New("usage: creator-keys add|remove KEY")
		}
		n, changed, err := a.editCreatorKeys(rest[0] == "add", rest[1])
		if err != nil {
			return "", nil, err
		}
		verb := map[bool]string{true: "added", false: "removed"}[rest[0] == "add"]
		if !changed {
			verb = map[bool]string{true: "already listed", false: "not listed"}[rest[0] == "add"]
		}
		return fmt.Sprintf("%s; %d creator keys in force\n", verb, n), []any{"changed", changed, "keys", n}, nil
	}
	return "", nil, fmt.Errorf("unknown command %q (stats, status, block, unblock, delete, new-queues, compact, creator-keys)", cmd)
}

// editCreatorKeys adds the public key line key (base64 of SPKI DER, as the
// file holds it and "creator-key new" prints it) to the creator-keys file in
// force, or removes every line holding that key, writing the file
// atomically (internal/atomicfile), and puts the file's keys in force at
// once, as a reload would. It returns the number of keys in force and
// whether the file changed. The relay only edits a file the configuration
// names: it does not choose where creator keys live.
func (a *adminServer) editCreatorKeys(add bool, key string) (int, bool, error) {
	der, err := base64.StdEncoding.Strict().DecodeString(strings.TrimSpace(key))
	if err != nil {
		return 0, false, errors.New("a creator key is base64 of SubjectPublicKeyInfo DER, as creator-key new prints it")
	}
	if _, err := codec.ParseVerifyKey(der); err != nil {
		return 0, false, fmt.Errorf("not an Ed25519 or RSA public key: %w", err)
	}
	a.limitsMu.Lock()
	defer a.limitsMu.Unlock()
	path := *a.creatorKeys
	if path == "" {
		return 0, false, errors.New("no creator-keys file is configured: set creator-keys in the config file, then reload")
	}
	text, err := os.ReadFile(path)
	if err != nil && !(add && errors.Is(err, fs.ErrNotExist)) {
		return 0, false, err
	}
	var out []string
	found := false
	for _, line := range strings.Split(strings.TrimRight(string(text), "\n"), "\n") {
		t := strings.TrimSpace(line)
		if b, derr := base64.StdEncoding.Strict().DecodeString(t); derr == nil && t != "" && string(b) == string(der) {
			found = true
			if !add {
				continue
			}
		}
		if line != "" || len(out) > 0 {
			out = append(out, line)
		}
	}
	changed := add != found
	if add && !found {
		out = append(out, base64.StdEncoding.EncodeToString(der))
	}
	if changed {
		if err := atomicfile.Write(path, []byte(strings.Join(out, "\n")+"\n"), 0o600); err != nil {
			return 0, false, fmt.Errorf("writing %s: %w", path, err)
		}
	}
	keys, err := readCreatorKeys(path, os.ReadFile)
	if err != nil {
		return 0, changed, err
	}
	l := a.e.Limits()
	l.CreatorKeys = keys
	if err := a.e.SetLimits(l); err != nil {
		return 0, changed, err
	}
	return len(keys), changed, nil
}

// parseQueueID decodes a RID or SID as clients print it: base64, standard
// or URL-safe, padded or not.
func parseQueueID(s string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.Strict().DecodeString(s); err == nil {
			if len(b) != codec.QueueIDSize {
				return nil, fmt.Errorf("a queue ID is %d bytes, this one %d", codec.QueueIDSize, len(b))
			}
			return b, nil
		}
	}
	return nil, errors.New("a queue ID is base64 (its RID or SID as the client prints it)")
}

// setNewQueues closes or opens queue creation in the limits in force, until
// the next reload or restart sets them from the configuration again.
func (a *adminServer) setNewQueues(closed bool) error {
	a.limitsMu.Lock()
	defer a.limitsMu.Unlock()
	l := a.e.Limits()
	l.NewQueuesClosed = closed
	if err := a.e.SetLimits(l); err != nil {
		return err
	}
	*a.override = "on"
	if closed {
		*a.override = "off"
	}
	return nil
}

// status is the relay's state in a few lines: connections, queues, stored
// messages and bytes, the store and whether NEW is open.
func (a *adminServer) status() string {
	var b strings.Builder
	sm, st := a.srv.Metrics(), a.e.Stats()
	state := "ok"
	if a.srv.Draining() {
		state = "draining"
	}
	fmt.Fprintf(&b, "relay: %s\n", state)
	fmt.Fprintf(&b, "connections: %d\n", sm.Open)
	fmt.Fprintf(&b, "queues: %d\n", st.Queues)
	fmt.Fprintf(&b, "messages: %d\n", st.Messages)
	fmt.Fprintf(&b, "stored-bytes: %d\n", st.BodyBytes)
	fmt.Fprintf(&b, "store: %s (fsync %s)\n", a.storeKnd, a.fsync)
	if rep, ok := a.st.(store.StatsReporter); ok {
		ss := rep.StoreStats()
		state := "ok"
		if ss.Failed {
			state = "failed: every change is refused until a restart"
		}
		fmt.Fprintf(&b, "store-state: %s\n", state)
		fmt.Fprintf(&b, "store-log-bytes: %d\n", ss.LogBytes)
		fmt.Fprintf(&b, "store-compactions: %d\n", ss.Compactions)
	}
	lim := a.e.Limits()
	a.limitsMu.Lock()
	override := *a.override
	a.limitsMu.Unlock()
	nq := "on"
	if lim.NewQueuesClosed {
		nq = "off"
	}
	if override != "" {
		nq += " (set by admin new-queues until the next reload)"
	}
	fmt.Fprintf(&b, "new-queues: %s\n", nq)
	if lim.CreatorKeys != nil {
		fmt.Fprintf(&b, "creator-keys: %d\n", len(lim.CreatorKeys))
	}
	return b.String()
}

// stats is the relay's own metrics (the smp_* aggregates of the metrics
// endpoint, without the Go runtime's) in Prometheus text format, whether
// or not metrics-listen is set.
func (a *adminServer) stats() (string, error) {
	src := metricsSource{Engine: a.e, Server: a.srv, KeyType: a.srv.Metrics().KEM, Draining: a.srv.Draining}
	if rep, ok := a.st.(store.StatsReporter); ok {
		src.Store = rep
	}
	reg := prometheus.NewRegistry()
	if err := reg.Register(newRelayCollector(src)); err != nil {
		return "", err
	}
	mfs, err := reg.Gather()
	if err != nil {
		return "", err
	}
	var b bytes.Buffer
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&b, mf); err != nil {
			return "", err
		}
	}
	return b.String(), nil
}

// adminUsage is the help of "smp-server admin".
const adminUsage = `Usage: smp-server admin [--data DIR | --config FILE] COMMAND [ARGS]

Sends one command to the running relay through DATA/admin.sock and prints
its answer. The socket is 0600: run it as the relay's user (or root).

Commands:
  stats               the relay's metrics (aggregates), in Prometheus text format
  status              connections, queues, stored messages and bytes, store state, new-queues
  block ID [drop]     block a queue by its RID or SID (base64): both sides get ERR AUTH;
                      its messages are kept, or deleted with "drop"
  unblock ID          lift a block
  delete ID           delete a queue and its messages
  new-queues on|off   open or close queue creation until the next reload (SIGHUP) or restart
  compact             compact the store's log now (store wal or disk)
  creator-keys add|remove KEY
                      add a public key line (as creator-key new prints it) to the
                      creator-keys file in force, or remove it; in force at once

Exit status: 0 the relay did it; 1 the relay refused or failed, or is not
reachable; 2 the command line is wrong.
`

// adminCmd is "smp-server admin": it finds the data directory as start
// does (--data, --config, SMP_DATA, the config file), sends the command
// and prints the answer.
func adminCmd(args []string, stdout, stderr io.Writer) int {
	var flagArgs []string
	i := 0
	for i < len(args) && strings.HasPrefix(args[i], "-") {
		a := args[i]
		if a == "-h" || a == "-help" || a == "--help" {
			fmt.Fprint(stdout, adminUsage)
			return 0
		}
		flagArgs = append(flagArgs, a)
		if !strings.Contains(a, "=") && i+1 < len(args) {
			i++
			flagArgs = append(flagArgs, args[i])
		}
		i++
	}
	cmd := args[i:]
	if len(cmd) == 0 {
		fmt.Fprint(stderr, adminUsage)
		return 2
	}
	_, r, code := configure("admin", flagArgs, stderr, readConfigFile)
	if code >= 0 {
		if code == 0 {
			code = 2
		}
		return code
	}
	line := strings.Join(cmd, " ")
	if len(line) >= adminMaxLine || strings.ContainsAny(line, "\r\n") {
		fmt.Fprintln(stderr, "smp-server admin: the command is too long or holds a line break")
		return 2
	}
	path := filepath.Join(r.cfg.data, adminSocket)
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()
	var dl net.Dialer
	c, err := dl.DialContext(ctx, "unix", path)
	if err != nil {
		fmt.Fprintf(stderr, "smp-server admin: cannot reach the relay at %s (is it running, and are you its user?): %v\n", path, err)
		return 1
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		fmt.Fprintf(stderr, "smp-server admin: %v\n", err)
		return 1
	}
	reply, err := io.ReadAll(c)
	if err != nil {
		fmt.Fprintf(stderr, "smp-server admin: reading the answer: %v\n", err)
		return 1
	}
	first, rest, _ := strings.Cut(string(reply), "\n")
	switch {
	case first == "ok":
		fmt.Fprint(stdout, rest)
		return 0
	case strings.HasPrefix(first, "error: "):
		fmt.Fprintf(stderr, "smp-server admin: %s\n", strings.TrimPrefix(first, "error: "))
		// A usage error is the caller's command line: exit 2.
		if strings.HasPrefix(first, "error: usage:") || strings.HasPrefix(first, "error: unknown command") {
			return 2
		}
		return 1
	}
	fmt.Fprintf(stderr, "smp-server admin: unexpected answer %q\n", first)
	return 1
}
