package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Pinning (--pin, on by default) gives the server and the load generator
// cores of their own, so that the server's throughput per core and CPU per
// message are the server's alone: the CPUs this process may use
// (sched_getaffinity) are split into server cores (the first half, at least
// one) and generator cores (the rest).
//
// How each side is pinned, and why this way:
//
//   - The bench process (the load generator, and the "bench worker" processes
//     it starts, which inherit its mask) is pinned by setting the generator
//     mask on every thread in /proc/self/task, repeating until a listing finds
//     no thread it has not set. Linux affinity is per thread and a new thread
//     inherits its creator's mask, so once every thread has the mask, every
//     later thread has it; a thread created by a not-yet-set thread during a
//     pass shows up in the next listing. GOMAXPROCS follows the generator core
//     count. This works for the test binary too, which calls run() directly
//     and so cannot be re-executed under taskset; restore undoes it at the
//     end of the run.
//   - Each smp-server inherits the mask of the thread that forks it:
//     startServer runs cmd.Start on a goroutine locked to its OS thread,
//     sets the server mask on that thread only, and ends still locked, so the
//     runtime discards the thread and no goroutine of the bench ever runs on
//     it with the server's mask. While a goroutine is locked, the Go runtime
//     creates new threads from its template thread, not the locked one, so no
//     other thread picks up the server mask either. This needs no taskset
//     binary, and the server's pid is the one whose /proc figures are read.
//     The server's Go runtime sizes GOMAXPROCS from the mask it starts with.
//
// The crypto-limit costs are measured before the process pins itself, on
// every CPU it may use, as without pinning.

// Pin is what a run's pinning was, for the report.
type Pin struct {
	Enabled bool `json:"enabled"`
	// ServerCPUs and GeneratorCPUs are CPU lists as taskset -c takes them.
	ServerCPUs    string `json:"serverCpus,omitempty"`
	GeneratorCPUs string `json:"generatorCpus,omitempty"`
	ServerCores   int    `json:"serverCores,omitempty"`
	GenCores      int    `json:"generatorCores,omitempty"`
	Note          string `json:"note,omitempty"`
}

// pinning is the live state: the masks, and what restore puts back.
type pinning struct {
	Pin
	server, gen, orig unix.CPUSet
	prevProcs         int
}

// cpuList returns the CPUs in s, in order.
func cpuList(s *unix.CPUSet) []int {
	var out []int
	for i := range len(s) * 64 {
		if s.IsSet(i) {
			out = append(out, i)
		}
	}
	return out
}

// formatCPUs writes cpus (ascending) as ranges: 0-3,6.
func formatCPUs(cpus []int) string {
	var parts []string
	for i := 0; i < len(cpus); {
		j := i
		for j+1 < len(cpus) && cpus[j+1] == cpus[j]+1 {
			j++
		}
		if j == i {
			parts = append(parts, strconv.Itoa(cpus[i]))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", cpus[i], cpus[j]))
		}
		i = j + 1
	}
	return strings.Join(parts, ",")
}

// splitCPUs returns the server CPUs (the first half, at least one) and the
// generator CPUs (the rest) of cpus; with fewer than two, ok is false.
func splitCPUs(cpus []int) (server, gen []int, ok bool) {
	if len(cpus) < 2 {
		return nil, nil, false
	}
	n := max(1, len(cpus)/2)
	return cpus[:n], cpus[n:], true
}

// startPinning splits the CPUs and pins this process to the generator
// cores. With pinning off, or one CPU, it returns a disabled pinning (with a
// note for the latter) and changes nothing.
func startPinning(enabled bool) (*pinning, error) {
	p := &pinning{}
	if !enabled {
		p.Note = "off (--pin=false): the server and the load generator share every core"
		return p, nil
	}
	if err := unix.SchedGetaffinity(0, &p.orig); err != nil {
		return nil, fmt.Errorf("--pin: sched_getaffinity: %w", err)
	}
	srv, gen, ok := splitCPUs(cpuList(&p.orig))
	if !ok {
		p.Note = "off: this process may use one CPU only, so the server and the load generator share it"
		return p, nil
	}
	for _, c := range srv {
		p.server.Set(c)
	}
	for _, c := range gen {
		p.gen.Set(c)
	}
	if err := setProcessAffinity(&p.gen); err != nil {
		_ = setProcessAffinity(&p.orig)
		return nil, fmt.Errorf("--pin: pinning the load generator to CPUs %s: %w", formatCPUs(gen), err)
	}
	p.prevProcs = runtime.GOMAXPROCS(len(gen))
	p.Pin = Pin{Enabled: true, ServerCPUs: formatCPUs(srv), GeneratorCPUs: formatCPUs(gen), ServerCores: len(srv), GenCores: len(gen)}
	return p, nil
}

// serverSet is the mask for smp-server, or nil when not pinned.
func (p *pinning) serverSet() *unix.CPUSet {
	if p == nil || !p.Enabled {
		return nil
	}
	return &p.server
}

// serverCores is the server's core count when pinned, else 0.
func (p *pinning) serverCores() int {
	if p == nil || !p.Enabled {
		return 0
	}
	return p.ServerCores
}

// restore gives every thread of this process its original mask back and
// GOMAXPROCS its old value (the tests run the suite in-process).
func (p *pinning) restore() error {
	if p == nil || !p.Enabled {
		return nil
	}
	runtime.GOMAXPROCS(p.prevProcs)
	return setProcessAffinity(&p.orig)
}

// setProcessAffinity sets set on every thread of this process, repeating
// until a listing of /proc/self/task holds no thread not yet set (see the
// comment at the top of this file).
func setProcessAffinity(set *unix.CPUSet) error {
	done := map[int]bool{}
	for range 100 {
		ents, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return err
		}
		fresh := 0
		for _, e := range ents {
			tid, err := strconv.Atoi(e.Name())
			if err != nil || done[tid] {
				continue
			}
			fresh++
			if err := unix.SchedSetaffinity(tid, set); err != nil && !errors.Is(err, unix.ESRCH) { // ESRCH: it exited
				return fmt.Errorf("sched_setaffinity(%d): %w", tid, err)
			}
			done[tid] = true
		}
		if fresh == 0 {
			return nil
		}
	}
	return errors.New("threads kept appearing in /proc/self/task")
}

// startPinned runs start (which forks the server) on a fresh OS thread whose
// mask is set, so that the child inherits set. The goroutine ends locked to
// that thread, so the runtime discards the thread rather than reuse it with
// the server's mask.
func startPinned(set *unix.CPUSet, start func() error) error {
	if set == nil {
		return start()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		if err := unix.SchedSetaffinity(0, set); err != nil {
			errc <- fmt.Errorf("sched_setaffinity for smp-server: %w", err)
			return
		}
		errc <- start()
	}()
	return <-errc
}

// checkAffinity confirms that process pid runs on exactly set.
func checkAffinity(pid int, set *unix.CPUSet) error {
	if set == nil {
		return nil
	}
	var got unix.CPUSet
	if err := unix.SchedGetaffinity(pid, &got); err != nil {
		return fmt.Errorf("sched_getaffinity(%d): %w", pid, err)
	}
	if got != *set {
		return fmt.Errorf("smp-server runs on CPUs %s, want %s", formatCPUs(cpuList(&got)), formatCPUs(cpuList(set)))
	}
	return nil
}
