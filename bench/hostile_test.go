package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/smprelay/smprelay/internal/smptest"
	"github.com/smprelay/smprelay/transport"
)

// TestHostileShort runs the hostile scenario briefly: the unsigned-SEND flood
// from 8 connections on the default relay and the replayed-hello flood on an
// x25519 relay, each between two baselines of its relay. It checks that the
// report is written with the ratios computed, that the relay stayed up, and
// that the honest client was not starved (shortGoal); it does not assert
// issue 12's 5× goal (hostileGoal, HostileResult.GoalMisses), which needs
// longer phases on a quiet machine (make bench-hostile).
func TestHostileShort(t *testing.T) {
	// The relay is built without -race: the race detector slows everything
	// but the cryptography about tenfold, which would measure the detector.
	bin, err := buildServer(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	hostile := func(attacks, kems string) (*HostileResult, string) {
		t.Helper()
		out := t.TempDir()
		var stdout, stderr bytes.Buffer
		args := []string{"--scenarios", "hostile", "--hostile-attacks", attacks, "--hostile-kems", kems,
			"--hostile-duration", "3s", "--hostile-dialers", "8", "--hostile-rebaseline", "--server-bin", bin, "--out", out}
		if code := run(args, &stdout, &stderr); code != 0 {
			t.Fatalf("run exited %d\nstderr:\n%s", code, stderr.String())
		}
		rep, _, _ := readReport(t, out)
		if rep.Hostile == nil {
			t.Fatal("no hostile result in the report")
		}
		return rep.Hostile, stdout.String()
	}
	h, md := hostile("unsigned-send-8,hello-replay", "x25519")
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
		if a := p.BaselineAfter; a == nil || a.Cycles == 0 {
			t.Errorf("%s: no baseline after the attack (--hostile-rebaseline): %+v", p.Attack, a)
		}
		if a := p.Attacker; a == nil || a.Connections == 0 || a.Commands == 0 || a.BytesOut == 0 {
			t.Errorf("%s: the attacker achieved nothing: %+v", p.Attack, a)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	if auth := h.Phases[1].Attacker.Figures["ERR AUTH answers"]; auth <= 0 {
		t.Errorf("unsigned-send-8: no ERR AUTH answers counted: %v", h.Phases[1].Attacker.Figures)
	}
	// The relay's per-source handshake rate, which the scenario keeps at its
	// default, holds the replay from one address to that rate (plus a burst
	// and the handshakes in flight when the phase ended): a count, which load
	// on the machine can only lower. Without the limit the relay accepts
	// thousands in the phase.
	rate := float64(transport.DefaultConnLimits.HandshakesPerSource)
	if p := h.Phases[3]; p.Attacker.Figures["hellos the relay accepted (welcome sent)"] <= 0 {
		t.Errorf("hello-replay: the relay accepted no replayed hello: %v", p.Attacker.Figures)
	} else if acc, most := p.Attacker.Figures["hellos the relay accepted (welcome sent)"], rate*(p.Seconds+2); acc > most {
		t.Errorf("hello-replay: the relay accepted %.0f hellos from one source in %.1f s, over %.0f: the per-source handshake rate (%.0f/s) did not hold",
			acc, p.Seconds, most, rate)
	} else {
		t.Logf("hello-replay: the relay accepted %.0f hellos from one source in %.1f s (at most %.0f)", acc, p.Seconds, most)
	}
	for _, s := range []string{"## hostile", "| unsigned-send-8 | mlkem768x25519 |", "| hello-replay | x25519 |", "## Goals", "Machine: ",
		"Baseline again once the relay recovered"} {
		if !strings.Contains(md, s) {
			t.Errorf("Markdown lacks %q", s)
		}
	}
	// The honest client under each flood against its relay's baselines,
	// retried (with fresh baselines, on a fresh relay) when it misses: a
	// shared machine can be busy for a whole phase, while a relay that
	// starves the honest client misses every time.
	for _, i := range []int{1, 3} {
		p, base := h.Phases[i], h.Phases[i-1].Honest
		var misses []string
		for {
			limit, met := shortGoal(p, base)
			if met {
				t.Logf("%s (%s): honest cycle p50 %.2f ms, within %.2f ms (baselines %.2f and %.2f ms)",
					p.Attack, p.KEM, p.Honest.CycleP50Ms, limit, base.CycleP50Ms, p.BaselineAfter.CycleP50Ms)
				if len(misses) > 0 {
					t.Logf("%s (%s): met at try %d, after %s", p.Attack, p.KEM, len(misses)+1, strings.Join(misses, "; "))
				}
				break
			}
			misses = append(misses, fmt.Sprintf("p50 %.2f ms > %.2f ms (baselines %.2f and %.2f ms, other load %.2f cores)",
				p.Honest.CycleP50Ms, limit, base.CycleP50Ms, p.BaselineAfter.CycleP50Ms, p.OtherCores))
			if len(misses) == shortGoalAttempts {
				t.Errorf("%s (%s): the honest client was starved in each of %d tries: %s", p.Attack, p.KEM, len(misses), strings.Join(misses, "; "))
				break
			}
			again, _ := hostile(p.Attack, p.KEM)
			if len(again.Phases) != 2 || again.Phases[1].Attack != p.Attack || again.Phases[1].BaselineAfter == nil {
				t.Fatalf("%s again: want its baseline and itself, with a baseline after: %+v", p.Attack, again.Phases)
			}
			p, base = again.Phases[1], again.Phases[0].Honest
		}
	}
}

// shortGoalAttempts is how many times TestHostileShort runs an attack whose
// honest client misses shortGoal before it fails.
const shortGoalAttempts = 3

// shortGoal is what TestHostileShort asks of an attack phase p: the honest
// client's median full cycle at most 10× its relay's baseline median + 10 ms,
// against the slower of the baselines before and after the attack. A relay
// that lets the flood crowd out the honest client (no work slices: about 4 s
// a cycle) misses it by far; one that is fair, on a machine others load,
// meets it. The median, since 3 s phases give 150 cycles, whose p99 is the
// second slowest and moves with every stall of a shared machine; make
// bench-hostile checks issue 12's goal on the p99 of longer phases.
func shortGoal(p HostilePhase, base HonestStats) (limitMs float64, met bool) {
	ref := base.CycleP50Ms
	if a := p.BaselineAfter; a != nil {
		ref = max(ref, a.CycleP50Ms)
	}
	limitMs = 10*ref + 10
	return limitMs, p.Honest.CycleP50Ms <= limitMs
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
