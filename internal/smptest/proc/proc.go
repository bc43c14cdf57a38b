// Package proc is the one launcher of the real smp-server binary, for the
// tests (through internal/smptest, whose StartServer and BuildServer wrap it
// for a testing.TB) and for go run ./bench alike, so it does not import the
// testing package. Build builds the binary; Start runs "smp-server start"
// with given arguments, data directory, open-file limit and a hook that
// forks it (the bench pins it to CPUs there), waits for the "listening on"
// line and reads the fingerprint; a Process collects the server's output and
// is stopped gracefully (Terminate) or with kill -9 (Kill).
package proc

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ServerPackage is the import path of the relay binary.
const ServerPackage = "github.com/smprelay/smprelay/cmd/smp-server"

// Build builds the main package importPath into dir, naming the binary
// after the package's last path element, and returns the binary's path. With
// raceDetector the binary is built with -race.
func Build(ctx context.Context, dir, importPath string, raceDetector bool) (string, error) {
	bin := filepath.Join(dir, path.Base(importPath))
	args := []string{"build", "-o", bin}
	if raceDetector {
		args = append(args, "-race")
	}
	args = append(args, importPath)
	if out, err := exec.CommandContext(ctx, goTool(), args...).CombinedOutput(); err != nil {
		return "", fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return bin, nil
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "go"
}

// Env is the environment of a launched binary: this process's, with
// the race runtime's exit delay cut short (a binary built with -race sleeps a
// second before exiting by default; the setting is ignored by other builds).
func Env() []string {
	env := os.Environ()
	if os.Getenv("GORACE") == "" {
		env = append(env, "GORACE=atexit_sleep_ms=50")
	}
	return env
}

// Config is how Start runs smp-server.
type Config struct {
	Bin     string // the smp-server binary
	DataDir string // --data; the directory need not exist
	// Args follow "start --data DataDir --listen 127.0.0.1:0" (a later flag
	// wins, so Args may name another --listen).
	Args []string
	// Env is added to the environment the server inherits (a later entry
	// wins), e.g. GORACE or GODEBUG settings.
	Env []string
	// NoFile, when > 0, is the process's open-file limit, soft and hard.
	NoFile int
	// MaxOutput, when > 0, caps the bytes kept of each of standard output and
	// standard error; lines past it are read and dropped (WaitOutput does not
	// see them).
	MaxOutput int
	// Spawn, when set, is called with the function that forks the process and
	// must call it, returning its error: the bench calls it on an OS thread
	// pinned to the server's CPUs, so that the server inherits the mask.
	Spawn func(start func() error) error
}

// Process is a running smp-server that Start started. Its output is
// collected until it exits.
type Process struct {
	Addr        string // HOST:PORT from the "listening on" line
	Fingerprint string // the contents of DataDir/fingerprint, without the newline
	DataDir     string
	Cmd         *exec.Cmd

	maxOutput int
	mu        sync.Mutex
	stdout    bytes.Buffer
	stderr    bytes.Buffer
	grew      chan struct{} // closed and replaced (under mu) whenever a line is added; see WaitOutput
	exited    chan struct{} // closed once Wait returned

	stop     sync.Once
	stopCode int
	stopErr  error
}

// Start runs "smp-server start --data DIR --listen 127.0.0.1:0
// ARGS..." as cfg says and returns once the server printed its "listening on"
// line and the fingerprint file is readable. When the server exits first, or
// ctx ends first, it is killed and the error holds its output.
func Start(ctx context.Context, cfg Config) (*Process, error) {
	if cfg.Bin == "" || cfg.DataDir == "" {
		return nil, errors.New("proc: Start needs Bin and DataDir")
	}
	all := append([]string{"start", "--data", cfg.DataDir, "--listen", "127.0.0.1:0"}, cfg.Args...)
	p := &Process{DataDir: cfg.DataDir, maxOutput: cfg.MaxOutput, grew: make(chan struct{}), exited: make(chan struct{})}
	if cfg.NoFile > 0 {
		// Both limits: Go raises the soft one to the hard one at start.
		// exec keeps the pid, so signals reach the server itself.
		script := fmt.Sprintf(`ulimit -n %d && exec "$0" "$@"`, cfg.NoFile)
		p.Cmd = exec.Command("/bin/sh", append([]string{"-c", script, cfg.Bin}, all...)...)
	} else {
		p.Cmd = exec.Command(cfg.Bin, all...)
	}
	p.Cmd.Env = append(Env(), cfg.Env...)
	outR, err := p.Cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	errR, err := p.Cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	spawn := cfg.Spawn
	if spawn == nil {
		spawn = func(start func() error) error { return start() }
	}
	if err := spawn(p.Cmd.Start); err != nil {
		return nil, fmt.Errorf("starting smp-server: %w", err)
	}
	addrs := make(chan string, 2)
	var readers sync.WaitGroup
	readers.Add(2)
	go p.scan(outR, &p.stdout, addrs, &readers)
	go p.scan(errR, &p.stderr, addrs, &readers)
	go func() {
		readers.Wait() // Wait closes the pipes: read them to the end first
		_ = p.Cmd.Wait()
		close(p.exited)
	}()

	select {
	case p.Addr = <-addrs:
	case <-p.exited:
		return nil, fmt.Errorf("smp-server %s exited before listening (%v); output:\n%s",
			strings.Join(all, " "), p.Cmd.ProcessState, p.Output())
	case <-ctx.Done():
		p.Kill()
		return nil, fmt.Errorf("smp-server did not print \"listening on\": %w; output:\n%s", ctx.Err(), p.Output())
	}
	fp, err := os.ReadFile(filepath.Join(cfg.DataDir, "fingerprint"))
	if err != nil {
		p.Kill()
		return nil, fmt.Errorf("reading the server's fingerprint: %w", err)
	}
	p.Fingerprint = strings.TrimSpace(string(fp))
	return p, nil
}

// scan copies lines of r into buf and sends the address of the first
// "listening on HOST:PORT" line to addrs.
func (p *Process) scan(r io.Reader, buf *bytes.Buffer, addrs chan<- string, wg *sync.WaitGroup) {
	defer wg.Done()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		p.mu.Lock()
		if p.maxOutput <= 0 || buf.Len()+len(line) < p.maxOutput {
			buf.WriteString(line)
			buf.WriteByte('\n')
			close(p.grew)
			p.grew = make(chan struct{})
		}
		p.mu.Unlock()
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
func (p *Process) Stdout() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stdout.String()
}

// Stderr returns what the server wrote to standard error so far.
func (p *Process) Stderr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

// Output returns standard output, then standard error (the log), so far.
func (p *Process) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stdout.String() + p.stderr.String()
}

// Exited is closed once the process has exited and its output is complete.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// WaitOutput waits until the server's standard output and standard error
// together hold substr at least n times: tests wait on log lines this way
// rather than sleeping. It fails when ctx ends or the process exits first.
func (p *Process) WaitOutput(ctx context.Context, substr string, n int) error {
	for {
		p.mu.Lock()
		got := strings.Count(p.stdout.String(), substr) + strings.Count(p.stderr.String(), substr)
		grew := p.grew
		p.mu.Unlock()
		if got >= n {
			return nil
		}
		select {
		case <-grew:
		case <-p.exited:
			// The readers finished before exited closed: the output is complete.
			if got = p.count(substr); got >= n {
				return nil
			}
			return fmt.Errorf("smp-server exited with %q %d times in its output, want %d", substr, got, n)
		case <-ctx.Done():
			return fmt.Errorf("waiting for %q %d times in the output (seen %d): %w", substr, n, got, ctx.Err())
		}
	}
}

func (p *Process) count(substr string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Count(p.stdout.String(), substr) + strings.Count(p.stderr.String(), substr)
}

// Kill ends the process with SIGKILL, as a crash would, and waits for it to
// exit.
func (p *Process) Kill() {
	select {
	case <-p.exited:
	default:
		_ = p.Cmd.Process.Signal(syscall.SIGKILL)
		<-p.exited
	}
}

// Terminate stops the process gracefully: it sends sig (SIGTERM, SIGINT),
// waits up to grace for the process to exit and returns its exit status. A
// process still running after grace is killed, and Terminate returns -1 and
// an error saying so. Only the first call signals; later calls return what
// it returned. After Kill, or when the process exited on its own, nothing is
// sent and the status is the one it exited with (-1 for a signal).
func (p *Process) Terminate(sig os.Signal, grace time.Duration) (int, error) {
	p.stop.Do(func() {
		select {
		case <-p.exited:
		default:
			if err := p.Cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
				p.stopErr = fmt.Errorf("signalling smp-server: %w", err)
			}
		}
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-p.exited:
			p.stopCode = p.Cmd.ProcessState.ExitCode()
		case <-t.C:
			p.Kill()
			p.stopCode = -1
			p.stopErr = fmt.Errorf("smp-server did not exit within %s of %v; killed", grace, sig)
		}
	})
	return p.stopCode, p.stopErr
}
