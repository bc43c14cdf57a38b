package main

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/smprelay/smprelay/internal/smptest"
	"golang.org/x/sys/unix"
)

// TestMain lets the test binary serve as "bench worker" and "bench honest",
// as the bench binary does: the idle-connections scenario and the hostile
// scenario's honest client re-execute it.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "worker" {
		os.Exit(workerMain(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == "honest" {
		os.Exit(honestMain(os.Args[2:]))
	}
	code := m.Run()
	smptest.Cleanup()
	os.Exit(code)
}

// TestTinySuite runs a tiny version of the suite against the real server and
// checks that the JSON, Markdown and SVG files are written and well formed
// and that the figures in them are consistent with each other.
func TestTinySuite(t *testing.T) {
	out := t.TempDir()
	settleEvery = 50 * time.Millisecond
	var before unix.CPUSet
	if err := unix.SchedGetaffinity(0, &before); err != nil {
		t.Fatal(err)
	}
	procs := runtime.GOMAXPROCS(0)
	var stdout, stderr bytes.Buffer
	// --pin is on by default: with two CPUs or more the server and the load
	// generator get their own (startServer fails if the server's mask is not
	// the server CPUs).
	args := []string{"--scenarios", "crypto-limit,relay-signed,idle-connections", "--crypto-time", "10ms",
		"--keys", "ed25519", "--pairs", "1", "--rsa-pairs", "", "--duration", "1s", "--warmup", "200ms",
		"--idle-steps", "20,40", "--idle-sample", "5", "--idle-kem", "x25519",
		"--server-bin", smptest.BuildServer(t), "--out", out}
	if code := run(args, &stdout, &stderr); code != 0 {
		t.Fatalf("run exited %d\nstderr:\n%s", code, stderr.String())
	}
	var after unix.CPUSet
	if err := unix.SchedGetaffinity(0, &after); err != nil || after != before || runtime.GOMAXPROCS(0) != procs {
		t.Errorf("after the run this thread may use CPUs %s and GOMAXPROCS is %d; before, %s and %d (err %v)",
			formatCPUs(cpuList(&after)), runtime.GOMAXPROCS(0), formatCPUs(cpuList(&before)), procs, err)
	}
	pinned := before.Count() >= 2
	rep, raw, jsons := readReport(t, out)
	if rep.Machine.Cores < 1 || rep.Machine.GoVersion == "" || rep.Machine.Commit == "" {
		t.Errorf("machine description incomplete: %+v", rep.Machine)
	}
	if rep.Crypto == nil || len(rep.Crypto.Cycles) == 0 || rep.Crypto.cycle("signed-ed25519").LimitOps <= 0 {
		t.Fatalf("crypto-limit missing or empty: %+v", rep.Crypto)
	}
	if len(rep.Relay) != 1 || rep.HalfPeak == nil {
		t.Fatalf("want one relay point and a half-peak run, got %d and %v", len(rep.Relay), rep.HalfPeak)
	}
	p := rep.Relay[0]
	if p.Delivered <= 0 || p.Errors != 0 || p.ServerCPUPerMsg <= 0 || p.CryptoPerMsg <= 0 {
		t.Errorf("relay point: %+v", p)
	}
	if pin := rep.Machine.Pin; pin.Enabled != pinned || (pinned && (pin.ServerCPUs == "" || pin.GeneratorCPUs == "" ||
		pin.ServerCores+pin.GenCores != before.Count())) || (!pinned && pin.Note == "") {
		t.Errorf("machine pin %+v with %d CPUs", pin, before.Count())
	}
	if pinned {
		for _, q := range []RelayPoint{p, *rep.HalfPeak} {
			if q.ServerCores != rep.Machine.Pin.ServerCores || q.PerServerCore <= 0 || q.CoreLimit <= 0 || q.PerCoreOverLimit <= 0 || q.NonCryptoPerMsg <= 0 {
				t.Errorf("pinned relay point lacks the per-server-core figures: %+v", q)
			}
			if d := q.PerCoreOverLimit - q.PerServerCore/q.CoreLimit; d > 1e-9 || d < -1e-9 {
				t.Errorf("÷ crypto limit per core %v is not %v ÷ %v", q.PerCoreOverLimit, q.PerServerCore, q.CoreLimit)
			}
		}
		for _, field := range []string{`"serverCpus"`, `"messagesPerSecondPerServerCore"`, `"perServerCoreOverCryptoLimitPerCore"`, `"nonCryptoServerCpuPerMessageUs"`} {
			if !bytes.Contains(raw, []byte(field)) {
				t.Errorf("JSON lacks %s", field)
			}
		}
	}
	if !(p.P50Ms <= p.P99Ms && p.P99Ms <= p.P999Ms && p.P999Ms <= p.MaxMs) || len(p.CDF) != len(cdfPercentiles) {
		t.Errorf("latency percentiles out of order: %+v", p)
	}
	if rep.HalfPeak.Throughput >= p.Throughput {
		t.Errorf("the half-peak run delivered %.0f/s, not less than the peak's %.0f/s", rep.HalfPeak.Throughput, p.Throughput)
	}
	if rep.Idle == nil || len(rep.Idle.Steps) != 2 {
		t.Fatalf("idle-connections: %+v", rep.Idle)
	}
	for _, s := range rep.Idle.Steps {
		if s.Probed != 5 || s.Delivered != 5 {
			t.Errorf("idle step %d: %d of %d probes delivered, want 5 of 5", s.Conns, s.Delivered, s.Probed)
		}
	}
	if rep.Idle.Steps[1].Conns != 40 || rep.Idle.Steps[1].RSS == 0 {
		t.Errorf("idle last step: %+v", rep.Idle.Steps[1])
	}

	md, err := os.ReadFile(strings.TrimSuffix(jsons[0], ".json") + ".md")
	if err != nil {
		t.Fatal(err)
	}
	wants := []string{"# smp-server benchmark", "## crypto-limit", "## relay-signed", "## idle-connections", "## Goals", "## Summary"}
	if pinned {
		wants = append(wants, "Pinned (--pin)", "| relay signed-ed25519, peak, per server core |", "msg/s per server core", "non-crypto server CPU µs/msg")
	}
	for _, want := range wants {
		if !bytes.Contains(md, []byte(want)) {
			t.Errorf("Markdown lacks %q", want)
		}
	}
	if !bytes.Equal(bytes.TrimSpace(md), bytes.TrimSpace(stdout.Bytes())) {
		t.Error("the summary printed differs from the Markdown file")
	}
	if want := "bench: report written to " + strings.TrimSuffix(jsons[0], ".json") + ".md"; !strings.Contains(stderr.String(), want) {
		t.Errorf("stderr does not say where the report went (%q):\n%s", want, stderr.String())
	}
	svgs, _ := filepath.Glob(filepath.Join(out, "*.svg"))
	if len(svgs) != 4 { // throughput, latency, latency distribution, idle RSS
		t.Fatalf("want 4 SVG charts, got %v", svgs)
	}
	for _, f := range svgs {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := wellFormed(b); err != nil {
			t.Errorf("%s: %v", filepath.Base(f), err)
		}
		if !bytes.Contains(b, []byte(`<svg xmlns="http://www.w3.org/2000/svg"`)) {
			t.Errorf("%s: no SVG root", filepath.Base(f))
		}
		marks, _ := seriesMarks(t, string(b))
		if len(marks) == 0 {
			t.Errorf("%s: no series drawn", filepath.Base(f))
		}
		for name, m := range marks {
			if len(m.segments) == 0 && m.markers == 0 {
				t.Errorf("%s: series %q has no visible mark in the plot", filepath.Base(f), name)
			}
		}
		if bytes.Contains(b, []byte("NaN")) || bytes.Contains(b, []byte("Inf")) {
			t.Errorf("%s: non-finite coordinates", filepath.Base(f))
		}
	}
}

func wellFormed(b []byte) error {
	d := xml.NewDecoder(bytes.NewReader(b))
	for {
		if _, err := d.Token(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// TestDefaultOutIgnored checks that runs with the default --out (make bench,
// make bench-quick) write where .gitignore keeps them out of git status.
func TestDefaultOutIgnored(t *testing.T) {
	c, err := parseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.out != defaultOut {
		t.Fatalf("default --out %q, want %q", c.out, defaultOut)
	}
	ignore, err := os.ReadFile(filepath.Join("..", ".gitignore"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(strings.Split(string(ignore), "\n"), "/"+defaultOut+"/") {
		t.Errorf(".gitignore lacks /%s/, so fresh runs show as untracked files", defaultOut)
	}
}

func TestHelpListsScenariosAndKnobs(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"--help"}, &stdout, &stderr); code != 0 {
		t.Fatalf("--help exited %d", code)
	}
	for _, want := range append(knownScenarios, "-hostile-duration", "-hostile-attacks", "-pairs", "-queues", "-body", "-duration", "-keys", "-server-args", "-server-profile", "-profile", "-pin") {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("--help does not mention %q", want)
		}
	}
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--scenarios", "relay"},
		{"--pairs", "0"},
		{"--keys", "dsa"},
		{"--fsync-modes", "sometimes"},
		{"--kems", "ecdh"},
		{"--window", "129"},
		{"--body", "8000"},
		{"--server-profile", "heap"},
		{"--hostile-attacks", "nuke"},
		{"--hostile-kems", "dh"},
		{"--hostile-duration", "0s"},
		{"extra"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(args, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), "bench: ") {
			t.Errorf("%q: exit %d, stderr %q; want 2 and a message", args, code, stderr.String())
		}
	}
}

func TestSlopeAndPercentiles(t *testing.T) {
	r := &IdleResult{BaseRSS: 1000, Steps: []IdleStep{{Conns: 1000, RSS: 11000}, {Conns: 3000, RSS: 31000}, {Conns: 5000, RSS: 51000}}}
	if got := slope(r); got < 9.999 || got > 10.001 {
		t.Errorf("slope = %v, want 10", got)
	}
	one := &IdleResult{BaseRSS: 1000, Steps: []IdleStep{{Conns: 100, RSS: 2000}}}
	if got := slope(one); got < 9.999 || got > 10.001 {
		t.Errorf("slope of one step against the baseline = %v, want 10", got)
	}
	sorted := make([]int64, 1000)
	for i := range sorted {
		sorted[i] = int64(i+1) * 1e6 // 1..1000 ms
	}
	for _, c := range []struct{ q, want float64 }{{50, 501}, {99, 991}, {99.9, 1000}, {100, 1000}} {
		if got := pctMs(sorted, c.q); got != c.want {
			t.Errorf("pctMs(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	if pctMs(nil, 50) != 0 {
		t.Error("pctMs of nothing is not 0")
	}
}

func TestSplitCPUs(t *testing.T) {
	for _, c := range []struct {
		cpus        []int
		server, gen string
		ok          bool
	}{
		{[]int{0}, "", "", false},
		{[]int{0, 1}, "0", "1", true},
		{[]int{0, 1, 2}, "0", "1-2", true},
		{[]int{0, 1, 2, 3, 4, 5, 6, 7}, "0-3", "4-7", true},
		{[]int{2, 3, 5, 8, 9}, "2-3", "5,8-9", true},
	} {
		s, g, ok := splitCPUs(c.cpus)
		if ok != c.ok || formatCPUs(s) != c.server || formatCPUs(g) != c.gen {
			t.Errorf("splitCPUs(%v) = %q, %q, %v; want %q, %q, %v", c.cpus, formatCPUs(s), formatCPUs(g), ok, c.server, c.gen, c.ok)
		}
	}
}

func TestBlockShare(t *testing.T) {
	for _, c := range []struct {
		n    int
		want float64
	}{{7300, 1}, {9000, 1}, {4000, 0.5}, {50, 1.0 / 163}} {
		if got := blockShare(c.n, 8192); got != c.want {
			t.Errorf("blockShare(%d) = %v, want %v", c.n, got, c.want)
		}
	}
}

// readReport reads the one JSON report a run wrote to out, and returns it
// with its bytes and the list of JSON files (one).
func readReport(t *testing.T, out string) (Report, []byte, []string) {
	t.Helper()
	jsons, _ := filepath.Glob(filepath.Join(out, "*.json"))
	if len(jsons) != 1 {
		t.Fatalf("want one JSON file in %s, got %v", out, jsons)
	}
	raw, err := os.ReadFile(jsons[0])
	if err != nil {
		t.Fatal(err)
	}
	var rep Report
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatalf("JSON: %v", err)
	}
	return rep, raw, jsons
}
