package smptest

import (
	"context"
	"net"
	"os"
	"os/exec"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/smprelay/smprelay/internal/smptest/proc"
)

// startupTimeout bounds how long StartServer waits for "listening on": only a
// guard against hanging, since a race-enabled binary generating an RSA key can
// be slow on a loaded machine.
const startupTimeout = 2 * time.Minute

// stopGrace is how long Stop waits after the signal before it kills the
// server: a guard against a hang, not a performance limit.
const stopGrace = time.Minute

// Server is a running smp-server process (a proc.Process) tied to a test: it is
// stopped when the test ends, and a failed stop fails the test.
type Server struct {
	*proc.Process

	t      testing.TB
	killed atomic.Bool // Kill was called: no exit status is expected
}

// StartServer runs "smp-server start --data <t.TempDir()> --listen
// 127.0.0.1:0 --handshakes-per-source 0 args..." and returns once it prints
// "listening on". The server is stopped with SIGTERM when the test ends and
// must exit with status 0.
func StartServer(t testing.TB, args ...string) *Server {
	t.Helper()
	return StartServerIn(t, t.TempDir(), args...)
}

// StartServerIn is StartServer with the data directory dir, for restarts.
func StartServerIn(t testing.TB, dir string, args ...string) *Server {
	t.Helper()
	return StartServerWith(t, Launch{Dir: dir, Args: args})
}

// Launch is how StartServerWith runs the server.
type Launch struct {
	Dir    string   // the data directory; a new t.TempDir() when empty
	Args   []string // after "start --data DIR --listen 127.0.0.1:0 --handshakes-per-source 0" (later flags win)
	NoFile int      // when > 0, the server runs with this open-file limit, soft and hard
	Env    []string // added to the environment the server inherits
}

// StartServerWith is StartServer with the data directory, arguments,
// open-file limit and environment of l.
func StartServerWith(t testing.TB, l Launch) *Server {
	t.Helper()
	cfg := proc.Config{Bin: BuildServer(t), DataDir: l.Dir, NoFile: l.NoFile, Env: l.Env}
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	// Tests dial from 127.0.0.1, often many connections at once: the
	// handshake rate per source is off unless a test sets it (a later flag
	// wins), and tested on its own in cmd/smp-server/conns_test.go.
	cfg.Args = append([]string{"--handshakes-per-source", "0"}, l.Args...)
	ctx, cancel := context.WithTimeout(context.Background(), startupTimeout)
	defer cancel()
	p, err := proc.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("smptest: %v", err)
	}
	s := &Server{Process: p, t: t}
	t.Cleanup(func() {
		if code := s.Stop(); code != 0 && !s.killed.Load() {
			t.Errorf("smp-server exited with status %d (%v); stderr:\n%s", code, s.Cmd.ProcessState, s.Stderr())
		}
	})
	host, port, err := net.SplitHostPort(s.Addr)
	if err != nil || host != "127.0.0.1" || port == "0" {
		t.Fatalf("smp-server: bad address %q in \"listening on\" line (%v)", s.Addr, err)
	}
	return s
}

// Stop sends SIGTERM (once), waits for the process to exit and returns its
// exit status; a process that does not exit within a minute is killed and
// reported as status -1. Later calls return the same status.
func (s *Server) Stop() int { return s.Signal(syscall.SIGTERM) }

// Kill ends the server with SIGKILL, as a crash would, and waits for it to
// exit; the test then expects no exit status of it.
func (s *Server) Kill() {
	s.killed.Store(true)
	s.Process.Kill()
}

// Signal is Stop with another signal (e.g. SIGINT).
func (s *Server) Signal(sig os.Signal) int {
	code, err := s.Terminate(sig, stopGrace)
	if err != nil {
		s.t.Errorf("smptest: %v", err)
	}
	return code
}

// RunServer runs the smp-server binary with args to its end (a command that
// does not serve, or a start that must fail) and returns its combined output
// and exit status.
func RunServer(t testing.TB, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(BuildServer(t), args...)
	cmd.Env = proc.Env()
	out, err := cmd.CombinedOutput()
	if cmd.ProcessState == nil {
		t.Fatalf("smp-server %v: %v", args, err)
	}
	return string(out), cmd.ProcessState.ExitCode()
}
