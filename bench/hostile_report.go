package main

import (
	"fmt"
	"math"
	"strings"
)

// markdown renders the hostile scenario: one table for what the honest
// client felt, one for what the relay and the attacker did.
func (r *HostileResult) markdown() string {
	var b strings.Builder
	b.WriteString("## hostile\n\n")
	fmt.Fprintf(&b, "Each phase %s, one at a time; the honest client runs %.0f SEND → MSG → ACK → OK cycles/s (%d-byte bodies, Ed25519-signed) and a dial "+
		"(connect, handshake, welcome) every %v from %s; a failed dial or cycle counts at %.0f ms. Ratios (×) are over the baseline of the same relay. "+
		"Goal: %s (applies to %s).\n\n", r.Duration, r.HonestRate, r.HonestBody, honestDialEvery, honestSrc, r.TimeoutMs, r.GoalFormula, strings.Join(r.GoalAttacks, ", "))
	for _, k := range sortedKeys(r.RelayArgs) {
		fmt.Fprintf(&b, "Relay %s: `%s`, max-conns %d.  \n", k, r.RelayArgs[k], r.MaxConns[k])
	}
	b.WriteString("\n| attack | relay key | dial p50 / p99 ms | × | SEND→MSG p50 / p99 ms | × | cycle p50 / p99 ms | × | cycles ok / failed | dials ok / failed | END | relay up | goal |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, p := range r.Phases {
		h := p.Honest
		x := func(v float64) string {
			if p.Attacker == nil {
				return "—"
			}
			return fmt.Sprintf("%.2f×", v)
		}
		goal := "—"
		if p.GoalApplies {
			goal = fmt.Sprintf("**fail** (limit %.1f ms)", p.GoalLimitMs)
			if p.GoalMet {
				goal = fmt.Sprintf("pass (limit %.1f ms)", p.GoalLimitMs)
			}
		}
		fmt.Fprintf(&b, "| %s | %s | %.2f / %.2f | %s | %.2f / %.2f | %s | %.2f / %.2f | %s | %d / %d | %d / %d | %d | %s | %s |\n",
			p.Attack, p.KEM, h.DialP50Ms, h.DialP99Ms, x(p.Ratio.DialP99), h.SendMsgP50Ms, h.SendMsgP99Ms, x(p.Ratio.SendMsgP99),
			h.CycleP50Ms, h.CycleP99Ms, x(p.Ratio.CycleP99), h.Cycles, h.CycleFailures, h.Dials, h.DialFailures, h.Ends,
			map[bool]string{true: "yes", false: "**no**"}[p.RelayUp], goal)
	}
	b.WriteString("\n| attack | relay key | relay CPU, cores | relay RSS start → max MiB | attacker connections (refused or dropped) | commands sent/s (answers/s) | MB/s to relay | MB/s from relay | load gen / other load, cores | recovery s | attack figures |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, p := range r.Phases {
		conns, cmds, out, in, figs, rec := "—", "—", "—", "—", "—", "—"
		if a := p.Attacker; a != nil {
			conns = fmt.Sprintf("%d (%d)", a.Connections, a.ConnsDropped)
			cmds = fmt.Sprintf("%.0f (%.0f)", a.CommandsPerSec, float64(a.Answers)/p.Seconds)
			rec = fmt.Sprintf("%.1f", p.RecoverySeconds)
			if p.RecoverySeconds < 0 {
				rec = fmt.Sprintf("**> %v**", recoveryLimit)
			}
			out, in = fmt.Sprintf("%.2f", a.BytesOutPerSec/1e6), fmt.Sprintf("%.2f", a.BytesInPerSec/1e6)
			var fs []string
			for _, k := range sortedFigures(a.Figures) {
				fs = append(fs, k+": "+num(a.Figures[k]))
			}
			if a.QueuesPerSecond > 0 {
				fs = append(fs, "queues created/s: "+num(a.QueuesPerSecond))
			}
			if len(fs) > 0 {
				figs = strings.Join(fs, "; ")
			}
		}
		fmt.Fprintf(&b, "| %s | %s | %.2f | %.0f → %.0f | %s | %s | %s | %s | %.2f / %.2f | %s | %s |\n", p.Attack, p.KEM, p.RelayCPU,
			float64(p.RSSStart)/(1<<20), float64(p.RSSMax)/(1<<20), conns, cmds, out, in, p.LoadGen, p.OtherCores, rec, figs)
	}
	fmt.Fprintf(&b, "\nCommands: transmissions sent (hellos for the hello floods); answers: transmissions the attacker read back. "+
		"Recovery: after the attack, until 5 honest cycles in a row were within the goal's limit again (the next phase starts then). Load gen: the attacker and the honest client (%s) "+
		"share the cores with the relay; other load: every other process meanwhile, above ~0.1 core the machine was shared. "+
		"Wall time of the scenario: %.0f s.\n", honestWhere(r.HonestProc), r.WallSeconds)
	var after []string
	for _, p := range r.Phases {
		if a := p.BaselineAfter; a != nil {
			after = append(after, fmt.Sprintf("after %s (%s) %.2f / %.2f ms", p.Attack, p.KEM, a.CycleP50Ms, a.CycleP99Ms))
		}
	}
	if len(after) > 0 {
		fmt.Fprintf(&b, "\nBaseline again once the relay recovered (--hostile-rebaseline), cycle p50 / p99: %s.\n", strings.Join(after, "; "))
	}
	if len(r.RelayErrors) > 0 {
		fmt.Fprintf(&b, "\nRelay errors at stop: %s\n", strings.Join(r.RelayErrors, "; "))
	}
	if r.StoppedEarly != "" {
		fmt.Fprintf(&b, "\nStopped early: %s\n", r.StoppedEarly)
	}
	for _, p := range r.Phases {
		if p.Honest.FirstError != "" {
			fmt.Fprintf(&b, "\nFirst honest error during %s (%s): %s\n", p.Attack, p.KEM, p.Honest.FirstError)
		}
		if p.Attacker != nil && p.Attacker.FirstDialError != "" {
			fmt.Fprintf(&b, "\nFirst failed attacker dial during %s (%s): %s\n", p.Attack, p.KEM, p.Attacker.FirstDialError)
		}
	}
	b.WriteString("\n")
	return b.String()
}

// num prints whole numbers without decimals and others with two.
func num(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

func sortedKeys(m map[string]string) []string {
	f := make(map[string]float64, len(m))
	for k := range m {
		f[k] = 0
	}
	return sortedFigures(f)
}

// honestWhere says where the honest client ran.
func honestWhere(own bool) string {
	if own {
		return "in a process of its own, bench honest"
	}
	return "in the attacker's process"
}
