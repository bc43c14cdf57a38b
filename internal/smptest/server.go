package smptest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/smprelay/smprelay/internal/race"
)

// startupTimeout bounds how long StartServer waits for "listening on": only a
// guard against hanging, since a race-enabled binary generating an RSA key can
// be slow on a loaded machine.
const startupTimeout = 2 * time.Minute

var build struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// BuildServer builds ./cmd/smp-server once per test binary run and returns
// the path of the binary. When the tests run with -race the server is built
// with -race too, so a data race in the server fails its exit status check.
// Call Cleanup from TestMain to remove the build directory.
func BuildServer(t testing.TB) string {
	t.Helper()
	build.once.Do(func() {
		build.dir, build.err = os.MkdirTemp("", "smptest-bin-")
		if build.err != nil {
			return
		}
		build.path = filepath.Join(build.dir, "smp-server")
		args := []string{"build", "-o", build.path}
		if race.Enabled {
			args = append(args, "-race")
		}
		args = append(args, "github.com/smprelay/smprelay/cmd/smp-server")
		out, err := exec.Command(goTool(), args...).CombinedOutput()
		if err != nil {
			build.err = fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	})
	if build.err != nil {
		t.Fatalf("smptest: building smp-server: %v", build.err)
	}
	return build.path
}

// Cleanup removes the binary built by BuildServer, if any.
func Cleanup() {
	if build.dir != "" {
		os.RemoveAll(build.dir)
	}
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "go"
}

// Server is a running smp-server process.
type Server struct {
	Addr        string // HOST:PORT from the "listening on" line
	Fingerprint string // contents of DataDir/fingerprint, without the newline
	DataDir     string
	Cmd         *exec.Cmd

	t       testing.TB
	mu      sync.Mutex
	stdout  bytes.Buffer
	stderr  bytes.Buffer
	exited  chan struct{} // closed once Wait returned
	waitErr error
	stop    sync.Once
	code    int
	grew    chan struct{} // closed and replaced (under mu) whenever a line is added; see WaitOutput
	killed  atomic.Bool   // Kill was called: no exit status is expected
}

// StartServer runs "smp-server start --data <t.TempDir()> --listen
// 127.0.0.1:0 --handshakes-per-source 0 args..." and returns once it prints
// "listening on". The server
// is stopped with SIGTERM when the test ends and must exit with status 0.
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
}

// StartServerWith is StartServer with the data directory, arguments and
// open-file limit of l.
func StartServerWith(t testing.TB, l Launch) *Server {
	t.Helper()
	bin := BuildServer(t)
	if l.Dir == "" {
		l.Dir = t.TempDir()
	}
	dir := l.Dir
	s := &Server{DataDir: dir, t: t, exited: make(chan struct{}), grew: make(chan struct{})}
	// Tests dial from 127.0.0.1, often many connections at once: the
	// handshake rate per source is off unless a test sets it (a later flag
	// wins), and tested on its own in cmd/smp-server/conns_test.go.
	all := append([]string{"start", "--data", dir, "--listen", "127.0.0.1:0", "--handshakes-per-source", "0"}, l.Args...)
	if l.NoFile > 0 {
		// Both limits: Go raises the soft one to the hard one at start.
		// exec keeps the pid, so signals reach the server itself.
		script := fmt.Sprintf(`ulimit -n %d && exec "$0" "$@"`, l.NoFile)
		s.Cmd = exec.Command("/bin/sh", append([]string{"-c", script, bin}, all...)...)
	} else {
		s.Cmd = exec.Command(bin, all...)
	}
	if race.Enabled && os.Getenv("GORACE") == "" {
		// The race runtime sleeps a second before exiting by default.
		s.Cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=50")
	}
	outR, err := s.Cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	errR, err := s.Cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Cmd.Start(); err != nil {
		t.Fatalf("smptest: starting smp-server: %v", err)
	}
	addrs := make(chan string, 2)
	var readers sync.WaitGroup
	readers.Add(2)
	go s.scan(outR, &s.stdout, addrs, &readers)
	go s.scan(errR, &s.stderr, addrs, &readers)
	go func() {
		readers.Wait() // Wait closes the pipes: read them to the end first
		s.waitErr = s.Cmd.Wait()
		close(s.exited)
	}()
	t.Cleanup(func() {
		if code := s.Stop(); code != 0 && !s.killed.Load() {
			t.Errorf("smp-server exited with status %d (%v); stderr:\n%s", code, s.waitErr, s.Stderr())
		}
	})

	select {
	case s.Addr = <-addrs:
	case <-s.exited:
		t.Fatalf("smp-server exited before listening (%v); stderr:\n%s", s.waitErr, s.Stderr())
	case <-time.After(startupTimeout):
		t.Fatalf("smp-server did not print \"listening on\" within %s; stderr:\n%s", startupTimeout, s.Stderr())
	}
	host, port, err := net.SplitHostPort(s.Addr)
	if err != nil || host != "127.0.0.1" || port == "0" {
		t.Fatalf("smp-server: bad address %q in \"listening on\" line (%v)", s.Addr, err)
	}
	fp, err := os.ReadFile(filepath.Join(dir, "fingerprint"))
	if err != nil {
		t.Fatalf("smptest: %v", err)
	}
	s.Fingerprint = strings.TrimSuffix(string(fp), "\n")
	return s
}

// scan copies lines of r into buf and sends the address of the first
// "listening on HOST:PORT" line to addrs.
func (s *Server) scan(r io.Reader, buf *bytes.Buffer, addrs chan<- string, wg *sync.WaitGroup) {
	defer wg.Done()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		s.mu.Lock()
		buf.WriteString(line)
		buf.WriteByte('\n')
		close(s.grew)
		s.grew = make(chan struct{})
		s.mu.Unlock()
		if _, rest, ok := strings.Cut(line, "listening on "); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				select {
				case addrs <- f[0]:
				default:
				}
			}
		}
	}
	_, _ = io.Copy(io.Discard, r)
}

// Stdout returns what the server wrote to standard output so far.
func (s *Server) Stdout() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stdout.String()
}

// Stderr returns what the server wrote to standard error so far.
func (s *Server) Stderr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stderr.String()
}

// Exited is closed once the process has exited.
func (s *Server) Exited() <-chan struct{} { return s.exited }

// Stop sends SIGTERM (once), waits for the process to exit and returns its
// exit status; a process that does not exit within a minute is killed and
// reported as status -1. Later calls return the same status.
func (s *Server) Stop() int { return s.Signal(syscall.SIGTERM) }

// Kill ends the server with SIGKILL, as a crash would, and waits for it to
// exit; the test then expects no exit status of it.
func (s *Server) Kill() {
	s.killed.Store(true)
	s.Signal(syscall.SIGKILL)
}

// Signal is Stop with another signal (e.g. SIGINT).
func (s *Server) Signal(sig os.Signal) int {
	s.stop.Do(func() {
		select {
		case <-s.exited:
		default:
			if err := s.Cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
				s.t.Errorf("smptest: signalling smp-server: %v", err)
			}
		}
		select {
		case <-s.exited:
			s.code = s.Cmd.ProcessState.ExitCode()
		case <-time.After(time.Minute):
			_ = s.Cmd.Process.Kill()
			<-s.exited
			s.code = -1
		}
	})
	return s.code
}
