package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/smprelay/smprelay/internal/smptest/proc"
	"golang.org/x/sys/unix"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat
// (getconf CLK_TCK; 100 on every Linux this runs on).
const clockTicks = 100

// buildServer builds ./cmd/smp-server into dir, from the module the bench
// runs in, without -race (the detector's cost would be measured).
func buildServer(ctx context.Context, dir string) (string, error) {
	bin, err := proc.Build(ctx, dir, proc.ServerPackage, false)
	if err != nil {
		return "", fmt.Errorf("building smp-server: %w", err)
	}
	return bin, nil
}

// server is a running smp-server process, started by the launcher the tests
// use too (internal/smptest/proc).
type server struct {
	*proc.Process
}

// capacityArgs lift the per-source limits (NEW is one of them: the idle
// scenario creates thousands of queues from one worker address): the
// capacity scenarios drive
// the relay from one or a few loopback addresses, where a public relay's
// defaults would measure those limits instead of the relay (the hostile-load
// scenario keeps them).
var capacityArgs = []string{"--max-conns-per-source", "0", "--handshakes-per-source", "0", "--new-queues-per-minute", "10000000"}

// startTimeout bounds the wait for the server's "listening on" line.
const startTimeout = 2 * time.Minute

// startServer runs "bin start --data <fresh dir> --listen 127.0.0.1:0"
// with capacityArgs and args appended (a flag in args wins), and waits for
// its "listening on" line. With cpus set, the server runs on those CPUs only
// (startPinned, pin.go).
func startServer(ctx context.Context, bin, tmp string, cpus *unix.CPUSet, args ...string) (*server, error) {
	data, err := os.MkdirTemp(tmp, "data-")
	if err != nil {
		return nil, err
	}
	return startServerIn(ctx, bin, data, cpus, args...)
}

// startServerIn is startServer on the data directory data, which may hold
// what an earlier server stored: the storage scenarios restart on it.
func startServerIn(ctx context.Context, bin, data string, cpus *unix.CPUSet, args ...string) (*server, error) {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	p, err := proc.Start(ctx, proc.Config{
		Bin:       bin,
		DataDir:   data,
		Args:      append(slices.Clone(capacityArgs), args...),
		MaxOutput: 1 << 20, // for errors only
		Spawn:     func(start func() error) error { return startPinned(cpus, start) },
	})
	if err != nil {
		return nil, err
	}
	if err := checkAffinity(p.Cmd.Process.Pid, cpus); err != nil {
		p.Kill()
		return nil, err
	}
	return &server{Process: p}, nil
}

// stopGrace is how long stop waits after SIGTERM before it kills the server.
const stopGrace = 30 * time.Second

// stop sends SIGTERM and waits for the process, killing it after stopGrace;
// an exit status other than 0 is an error.
func (s *server) stop() error {
	code, err := s.Terminate(syscall.SIGTERM, stopGrace)
	if err != nil {
		return err
	}
	if code != 0 {
		return fmt.Errorf("smp-server exited with %v:\n%s", s.Cmd.ProcessState, s.Output())
	}
	return nil
}

// usage is a reading of the server's CPU time and memory.
type usage struct {
	CPU time.Duration // utime + stime
	RSS uint64        // VmRSS, bytes
	At  time.Time
}

func (s *server) usage() (usage, error) { return procUsage(s.Cmd.Process.Pid) }

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
