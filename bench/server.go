package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat
// (getconf CLK_TCK; 100 on every Linux this runs on).
const clockTicks = 100

// buildServer builds ./cmd/smp-server into dir, from the module the bench
// runs in.
func buildServer(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "smp-server")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/smprelay/smprelay/cmd/smp-server")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building smp-server: %w\n%s", err, out)
	}
	return bin, nil
}

// server is a running smp-server process.
type server struct {
	Addr        string
	Fingerprint string
	Data        string
	cmd         *exec.Cmd
	exited      chan struct{}
	mu          sync.Mutex
	out         bytes.Buffer // the process's output, for errors
}

// capacityArgs lift the per-source limits (NEW is one of them: the idle
// scenario creates thousands of queues from one worker address): the
// capacity scenarios drive
// the relay from one or a few loopback addresses, where a public relay's
// defaults would measure those limits instead of the relay (the hostile-load
// scenario keeps them).
var capacityArgs = []string{"--max-conns-per-source", "0", "--handshakes-per-source", "0", "--new-queues-per-minute", "10000000"}

// startServer runs "bin start --listen 127.0.0.1:0 --data <fresh dir>"
// with capacityArgs and args appended (a flag in args wins), and waits for
// its "listening on" line. With cpus set, the server runs on those CPUs only
// (startPinned, pin.go).
func startServer(ctx context.Context, bin, tmp string, cpus *unix.CPUSet, args ...string) (*server, error) {
	data, err := os.MkdirTemp(tmp, "data-")
	if err != nil {
		return nil, err
	}
	full := append([]string{"start", "--listen", "127.0.0.1:0", "--data", data}, capacityArgs...)
	full = append(full, args...)
	cmd := exec.Command(bin, full...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	s := &server{Data: data, cmd: cmd, exited: make(chan struct{})}
	if err := startPinned(cpus, cmd.Start); err != nil {
		return nil, fmt.Errorf("starting smp-server: %w", err)
	}
	if err := checkAffinity(cmd.Process.Pid, cpus); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, err
	}
	addrs := make(chan string, 2)
	var wg sync.WaitGroup
	for _, r := range []io.Reader{stdout, stderr} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.scan(r, addrs)
		}()
	}
	go func() {
		wg.Wait()
		_ = cmd.Wait()
		close(s.exited)
	}()
	t := time.NewTimer(2 * time.Minute)
	defer t.Stop()
	select {
	case s.Addr = <-addrs:
	case <-s.exited:
		return nil, fmt.Errorf("smp-server %s exited before listening:\n%s", strings.Join(full, " "), s.output())
	case <-t.C:
		s.stop()
		return nil, fmt.Errorf("smp-server did not print 'listening on' within 2 minutes:\n%s", s.output())
	case <-ctx.Done():
		s.stop()
		return nil, ctx.Err()
	}
	fp, err := os.ReadFile(filepath.Join(data, "fingerprint"))
	if err != nil {
		s.stop()
		return nil, fmt.Errorf("reading the server's fingerprint: %w", err)
	}
	s.Fingerprint = strings.TrimSpace(string(fp))
	return s, nil
}

func (s *server) scan(r io.Reader, addrs chan<- string) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		s.mu.Lock()
		if s.out.Len() < 1<<20 {
			s.out.WriteString(line + "\n")
		}
		s.mu.Unlock()
		if _, rest, ok := strings.Cut(line, "listening on "); ok {
			select {
			case addrs <- strings.Fields(rest)[0]:
			default:
			}
		}
	}
}

func (s *server) output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.String()
}

// stop sends SIGTERM and waits for the process, killing it after 30 s.
func (s *server) stop() error {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(30 * time.Second)
	defer t.Stop()
	select {
	case <-s.exited:
	case <-t.C:
		_ = s.cmd.Process.Kill()
		<-s.exited
		return errors.New("smp-server did not stop within 30 s of SIGTERM; killed")
	}
	if st := s.cmd.ProcessState; st != nil && !st.Success() {
		return fmt.Errorf("smp-server exited with %v:\n%s", st, s.output())
	}
	return nil
}

// usage is a reading of the server's CPU time and memory.
type usage struct {
	CPU time.Duration // utime + stime
	RSS uint64        // VmRSS, bytes
	At  time.Time
}

func (s *server) usage() (usage, error) { return procUsage(s.cmd.Process.Pid) }

// procUsage reads /proc/<pid>/stat and /proc/<pid>/status.
func procUsage(pid int) (usage, error) {
	u := usage{At: time.Now()}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return u, err
	}
	// Fields after the command name, which is in parentheses and may hold spaces:
	// state is field 3, utime field 14, stime field 15 (proc(5)).
	i := bytes.LastIndexByte(stat, ')')
	f := strings.Fields(string(stat[i+1:]))
	if len(f) < 13 {
		return u, fmt.Errorf("/proc/%d/stat: %d fields after the name", pid, len(f))
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return u, fmt.Errorf("/proc/%d/stat: utime %q stime %q", pid, f[11], f[12])
	}
	u.CPU = time.Duration(ut+st) * time.Second / clockTicks
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return u, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			u.RSS = kb << 10
		}
	}
	return u, nil
}

// settleEvery is the interval between RSS readings of settledRSS; tests
// shorten it.
var settleEvery = 500 * time.Millisecond

// settledRSS reads the server's RSS until two readings settleEvery apart differ by
// less than 0.5 % (or 20 s pass), so that the heap has stopped moving after
// the last connections came in. Waiting for a reading to settle is a
// measurement, not synchronisation.
func (s *server) settledRSS() (uint64, error) {
	prev, err := s.usage()
	if err != nil {
		return 0, err
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		time.Sleep(settleEvery)
		cur, err := s.usage()
		if err != nil {
			return 0, err
		}
		diff := float64(cur.RSS) - float64(prev.RSS)
		if diff < 0 {
			diff = -diff
		}
		if diff < 0.005*float64(cur.RSS) {
			return cur.RSS, nil
		}
		prev = cur
	}
	return prev.RSS, nil
}

// machineBusy returns the CPU time all processes have used (the cpu line of
// /proc/stat: everything but idle and iowait). Set against the server's and
// this process's own time, it tells how much other work shared the machine
// during a measurement.
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var busy uint64
	for i, v := range f[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		if i >= 8 { // guest time is already counted in user
			break
		}
		n, _ := strconv.ParseUint(v, 10, 64)
		busy += n
	}
	return time.Duration(busy) * time.Second / clockTicks
}
