package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/smprelay/smprelay/internal/smptest"
)

// TestHostileShort runs the hostile scenario briefly: the unsigned-SEND flood
// from 8 connections on the default relay and the replayed-hello flood on an
// x25519 relay, each after its relay's baseline. It checks that the report is
// written with the ratios computed and that the relay stayed up; it does not
// assert issue 12's 5× goal (hostileGoal, HostileResult.GoalMisses), which
// the relay does not meet yet.
func TestHostileShort(t *testing.T) {
	out := t.TempDir()
	var stdout, stderr bytes.Buffer
	// The relay is built without -race: the race detector slows everything
	// but the cryptography about tenfold, which would measure the detector.
	bin, err := buildServer(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"--scenarios", "hostile", "--hostile-attacks", "unsigned-send-8,hello-replay", "--hostile-kems", "x25519",
		"--hostile-duration", "3s", "--hostile-dialers", "8", "--server-bin", bin, "--out", out}
	if code := run(args, &stdout, &stderr); code != 0 {
		t.Fatalf("run exited %d\nstderr:\n%s", code, stderr.String())
	}
	rep, _, _ := readReport(t, out)
	h := rep.Hostile
	if h == nil {
		t.Fatal("no hostile result in the report")
	}
	if !h.HonestProc {
		t.Error("the honest client did not run in its own process (--hostile-honest-process is on by default)")
	}
	want := []struct{ attack, kem string }{{"baseline", mainKEM}, {"unsigned-send-8", mainKEM}, {"baseline", "x25519"}, {"hello-replay", "x25519"}}
	if len(h.Phases) != len(want) {
		t.Fatalf("got %d phases, want %d: %+v", len(h.Phases), len(want), h.Phases)
	}
	for i, w := range want {
		p := h.Phases[i]
		if p.Attack != w.attack || p.KEM != w.kem {
			t.Errorf("phase %d is %s on %s, want %s on %s", i, p.Attack, p.KEM, w.attack, w.kem)
		}
		if !p.RelayAlive {
			t.Errorf("%s (%s): the relay exited", p.Attack, p.KEM)
		}
		if p.Honest.Cycles+p.Honest.CycleFailures == 0 || p.Honest.CycleP99Ms <= 0 {
			t.Errorf("%s (%s): the honest client measured nothing: %+v", p.Attack, p.KEM, p.Honest)
		}
		if p.Attack == "baseline" {
			if p.Honest.Cycles == 0 {
				t.Errorf("baseline (%s): no honest cycle completed: %+v", p.KEM, p.Honest)
			}
			continue
		}
		if !p.GoalApplies || p.GoalLimitMs <= 0 {
			t.Errorf("%s: the goal is not evaluated (applies %v, limit %.2f ms)", p.Attack, p.GoalApplies, p.GoalLimitMs)
		}
		if p.Ratio.CycleP99 <= 0 || p.Ratio.SendMsgP99 <= 0 || p.Ratio.DialP99 <= 0 {
			t.Errorf("%s: ratios to the baseline not computed: %+v", p.Attack, p.Ratio)
		}
		if p.RecoverySeconds < 0 {
			t.Errorf("%s: the relay did not serve the honest client again within %v of the attack", p.Attack, recoveryLimit)
		}
		if a := p.Attacker; a == nil || a.Connections == 0 || a.Commands == 0 || a.BytesOut == 0 {
			t.Errorf("%s: the attacker achieved nothing: %+v", p.Attack, a)
		}
	}
	// Issue 12's goal as a ratio within this run, with room for a short
	// phase on a shared machine: the honest full cycle under the flood from
	// 8 connections stays within 10× its baseline + 10 ms (make bench-hostile
	// checks the goal itself, 5× + 5 ms, over longer phases).
	for _, i := range []int{1, 3} { // unsigned-send-8, hello-replay: each after its relay's baseline
		if p, base := h.Phases[i], h.Phases[i-1].Honest.CycleP99Ms; p.Honest.CycleP99Ms > 10*base+10 {
			t.Errorf("%s (%s): honest full-cycle p99 %.2f ms, over 10× the baseline %.2f ms + 10 ms",
				p.Attack, p.KEM, p.Honest.CycleP99Ms, base)
		}
	}
	if auth := h.Phases[1].Attacker.Figures["ERR AUTH answers"]; auth <= 0 {
		t.Errorf("unsigned-send-8: no ERR AUTH answers counted: %v", h.Phases[1].Attacker.Figures)
	}
	if acc := h.Phases[3].Attacker.Figures["hellos the relay accepted (welcome sent)"]; acc <= 0 {
		t.Errorf("hello-replay: the relay accepted no replayed hello: %v", h.Phases[3].Attacker.Figures)
	}
	md := stdout.String()
	for _, s := range []string{"## hostile", "| unsigned-send-8 | mlkem768x25519 |", "| hello-replay | x25519 |", "## Goals", "Machine: "} {
		if !strings.Contains(md, s) {
			t.Errorf("Markdown lacks %q", s)
		}
	}
}

// TestHostileInProcess runs one short attack with the honest client in the
// attackers' process (--hostile-honest-process=false), the mode kept to
// compare with.
func TestHostileInProcess(t *testing.T) {
	out := t.TempDir()
	var stdout, stderr bytes.Buffer
	args := []string{"--scenarios", "hostile", "--hostile-attacks", "unsigned-send-1", "--hostile-kems", mainKEM,
		"--hostile-duration", "1s", "--hostile-honest-process=false", "--server-bin", smptest.BuildServer(t), "--out", out}
	if code := run(args, &stdout, &stderr); code != 0 {
		t.Fatalf("run exited %d\nstderr:\n%s", code, stderr.String())
	}
	rep, _, _ := readReport(t, out)
	h := rep.Hostile
	if h == nil || h.HonestProc || len(h.Phases) != 2 {
		t.Fatalf("want an in-process run of 2 phases, got %+v", h)
	}
	for _, p := range h.Phases {
		if p.Honest.Cycles == 0 || !p.RelayAlive {
			t.Errorf("%s: %d honest cycles, relay alive %v", p.Attack, p.Honest.Cycles, p.RelayAlive)
		}
	}
	if !strings.Contains(stdout.String(), "in the attacker's process") {
		t.Error("the Markdown does not say where the honest client ran")
	}
}

func TestHostileGoal(t *testing.T) {
	base := HonestStats{Cycles: 100, CycleP99Ms: 3}
	for _, c := range []struct {
		p99    float64
		cycles int64
		up     bool
		met    bool
	}{{20, 100, true, true}, {20.01, 100, true, false}, {1, 100, false, false}, {1, 0, true, false}} {
		p := HostilePhase{Honest: HonestStats{Cycles: c.cycles, CycleP99Ms: c.p99}, RelayUp: c.up}
		limit, met := hostileGoal(p, base)
		if limit != 20 || met != c.met {
			t.Errorf("p99 %.2f ms, %d cycles, up %v: limit %.2f, met %v; want 20, %v", c.p99, c.cycles, c.up, limit, met, c.met)
		}
	}
	r := &HostileResult{Phases: []HostilePhase{{Attack: "a", GoalApplies: true, GoalMet: true}, {Attack: "b", GoalApplies: true},
		{Attack: "c", GoalApplies: false}}}
	if m := r.GoalMisses(); len(m) != 1 || !strings.HasPrefix(m[0], "b ") {
		t.Errorf("GoalMisses = %q, want only b", m)
	}
}
