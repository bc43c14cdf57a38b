package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Report is everything one run measured; it is written as JSON as is.
type Report struct {
	Started    time.Time        `json:"started"`
	Command    string           `json:"command"`
	Machine    Machine          `json:"machine"`
	Scenarios  []string         `json:"scenarios"`
	Config     map[string]any   `json:"config"`
	Crypto     *CryptoCosts     `json:"cryptoLimit,omitempty"`
	Relay      []RelayPoint     `json:"relay,omitempty"`
	HalfPeak   *RelayPoint      `json:"halfPeak,omitempty"`
	Handshakes []HandshakePoint `json:"handshakes,omitempty"`
	Idle       *IdleResult      `json:"idleConnections,omitempty"`
	Fsync      []RelayPoint     `json:"fsync,omitempty"`
	Hostile    *HostileResult   `json:"hostile,omitempty"`
	// StorageMessages and StorageQueues are the storage scenarios (issue 14;
	// make bench-storage).
	StorageMessages *StorageMessagesResult `json:"storageMessages,omitempty"`
	StorageQueues   *StorageQueuesResult   `json:"storageQueues,omitempty"`
	// Contacts is the contacts scenario (issue 17; make bench-contacts).
	Contacts   *ContactsResult `json:"contacts,omitempty"`
	Goals      []Goal          `json:"goals"`
	Profiles   []string        `json:"serverProfileDirs,omitempty"`
	Files      []string        `json:"files"`
	LoadAvgEnd float64         `json:"loadAverageAtEnd"`
}

// Goal is one of the goals and where this run stands.
type Goal struct {
	Goal     string `json:"goal"`
	Measured string `json:"measured"`
	Met      bool   `json:"met"`
}

// stem is the results' file name without extension: <date>-<commit>.
func (r *Report) stem() string {
	return r.Started.Format("2006-01-02T150405Z") + "-" + r.Machine.Commit
}

func (r *Report) goals() {
	r.Goals = nil
	if best := r.best("signed-ed25519"); best != nil && best.CryptoPerMsg > 0 {
		lowest := best
		for i := range r.Relay {
			if p := &r.Relay[i]; p.Series == "signed-ed25519" && p.CPUOverCrypto > 0 && p.CPUOverCrypto < lowest.CPUOverCrypto {
				lowest = p
			}
		}
		r.Goals = append(r.Goals, Goal{"relay-signed: server CPU per delivered message ≤ 1.3× its crypto cost",
			fmt.Sprintf("%.2f× at peak (%d pairs: %.0f µs vs %.0f µs; %.2f× against the cost with all cores busy); best %.2f× (%d pairs)", best.CPUOverCrypto, best.Pairs,
				best.ServerCPUPerMsg, best.CryptoPerMsg, best.CPUOverCryptoBusy, lowest.CPUOverCrypto, lowest.Pairs), lowest.CPUOverCrypto <= 1.3})
	}
	if r.Idle != nil && r.Idle.SlopeBytes > 0 {
		last := r.Idle.Steps[len(r.Idle.Steps)-1].Conns
		r.Goals = append(r.Goals, Goal{"server RSS < 10 KiB per idle subscribed connection",
			fmt.Sprintf("%.1f KiB per connection (slope up to %d connections)", r.Idle.SlopeBytes/1024, last), r.Idle.SlopeBytes < 10*1024})
	}
	for _, h := range r.Handshakes {
		if h.Limit > 0 {
			r.Goals = append(r.Goals, Goal{"handshakes ≥ 80% of the KEM open limit (" + h.KEM + ")",
				fmt.Sprintf("%.0f%% (%.0f/s of %.0f/s; server CPU %.2f× the open cost)", 100*h.OverLimit, h.PerSecond, h.Limit, h.CPUOverCrypto),
				h.OverLimit >= 0.8})
		}
	}
	halves := []RelayPoint{}
	if r.HalfPeak != nil {
		halves = append(halves, *r.HalfPeak)
	}
	for _, p := range r.Fsync {
		if p.Paced {
			halves = append(halves, p)
		} else if p.CPUOverCrypto > 0 {
			r.Goals = append(r.Goals, Goal{"relay-signed, " + p.ServerArgs + ": server CPU per delivered message ≤ 1.3× its crypto cost",
				fmt.Sprintf("%.2f× (%d pairs: %.0f µs vs %.0f µs; %.2f× against the cost with all cores busy)", p.CPUOverCrypto, p.Pairs, p.ServerCPUPerMsg, p.CryptoPerMsg, p.CPUOverCryptoBusy), p.CPUOverCrypto <= 1.3})
		}
	}
	for _, h := range halves {
		r.Goals = append(r.Goals, Goal{"p99 SEND→MSG < 5 ms at half of peak throughput (" + h.Series + ")",
			fmt.Sprintf("%.2f ms at %.0f msg/s paced (%d pairs)", h.P99Ms, h.Throughput, h.Pairs), h.P99Ms < 5})
	}
	if r.Hostile != nil {
		for _, p := range r.Hostile.Phases {
			if p.GoalApplies {
				r.Goals = append(r.Goals, Goal{"hostile " + p.Attack + " (" + p.KEM + "): honest full-cycle p99 ≤ 5× baseline + 5 ms, relay up",
					fmt.Sprintf("%.2f ms (%.2f× baseline; limit %.2f ms); relay up: %v", p.Honest.CycleP99Ms, p.Ratio.CycleP99, p.GoalLimitMs, p.RelayUp), p.GoalMet})
			}
		}
	}
}

func (r *Report) best(series string) *RelayPoint {
	var b *RelayPoint
	for i := range r.Relay {
		if p := &r.Relay[i]; p.Series == series && (b == nil || p.Throughput > b.Throughput) {
			b = p
		}
	}
	return b
}

// write writes <dir>/<stem>.json, .md and the charts, and returns the
// Markdown and the path of its file.
func (r *Report) write(dir string) (string, string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", err
	}
	r.goals()
	r.LoadAvgEnd = loadAvg()
	stem := filepath.Join(dir, r.stem())
	charts := r.charts()
	r.Files = []string{filepath.Base(stem) + ".json", filepath.Base(stem) + ".md"}
	for _, ch := range charts {
		r.Files = append(r.Files, filepath.Base(stem)+"-"+ch.name+".svg")
	}
	md := r.markdown()
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return "", "", err
	}
	if err := os.WriteFile(stem+".json", append(js, '\n'), 0o644); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(stem+".md", []byte(md), 0o644); err != nil {
		return "", "", err
	}
	for _, ch := range charts {
		if err := os.WriteFile(stem+"-"+ch.name+".svg", []byte(ch.svg), 0o644); err != nil {
			return "", "", err
		}
	}
	return md, stem + ".md", nil
}

type chart struct{ name, svg string }

func (r *Report) charts() []chart {
	var out []chart
	bySeries := map[string][]RelayPoint{}
	var order []string
	for _, p := range r.Relay {
		if _, ok := bySeries[p.Series]; !ok {
			order = append(order, p.Series)
		}
		bySeries[p.Series] = append(bySeries[p.Series], p)
	}
	if len(order) > 0 {
		var tput, lat []series
		for _, s := range order {
			var xs, ys, p50, p99 []float64
			for _, p := range bySeries[s] {
				xs, ys = append(xs, float64(p.Connections)), append(ys, p.Throughput)
				p50, p99 = append(p50, p.P50Ms), append(p99, p.P99Ms)
			}
			tput = append(tput, series{name: s, xs: xs, ys: ys})
			if lim := bySeries[s][0].Limit; lim > 0 {
				tput = append(tput, series{name: s + " limit", ys: []float64{lim}, limit: true})
			}
			lat = append(lat, series{name: s + " p99", xs: xs, ys: p99}, series{name: s + " p50", xs: xs, ys: p50, dashed: true})
		}
		out = append(out, chart{"throughput", lineChart("Delivered messages/s against connections", "connections (senders + recipients)", "messages/s", true, tput)})
		out = append(out, chart{"latency", lineChart("SEND → MSG latency against connections", "connections (senders + recipients)", "ms", true, lat)})
	}
	var dist []series
	if b := r.best("signed-ed25519"); b != nil && len(b.CDF) > 0 {
		dist = append(dist, series{name: fmt.Sprintf("peak, %d pairs", b.Pairs), xs: b.CDF, ys: cdfPercentiles})
	}
	if r.HalfPeak != nil && len(r.HalfPeak.CDF) > 0 {
		dist = append(dist, series{name: "half of peak, paced", xs: r.HalfPeak.CDF, ys: cdfPercentiles})
	}
	if len(dist) > 0 {
		out = append(out, chart{"latency-distribution", lineChart("SEND → MSG latency distribution (Ed25519)", "latency, ms", "percentile", true, dist)})
	}
	if r.Idle != nil && len(r.Idle.Steps) > 0 {
		xs, ys := []float64{0}, []float64{float64(r.Idle.BaseRSS) / (1 << 20)}
		for _, s := range r.Idle.Steps {
			xs, ys = append(xs, float64(s.Conns)), append(ys, float64(s.RSS)/(1<<20))
		}
		out = append(out, chart{"idle-rss", lineChart("Server RSS against idle subscribed connections", "connections", "MiB", false, []series{{name: "VmRSS", xs: xs, ys: ys}})})
	}
	return append(out, r.storageCharts()...)
}

func (r *Report) markdown() string {
	var b strings.Builder
	m := r.Machine
	fmt.Fprintf(&b, "# smp-server benchmark, %s\n\n", r.Started.Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&b, "Machine: %s, %d cores, %.1f GiB, Linux %s, %s, commit %s, open files %d (hard %d).  \n",
		m.CPUModel, m.Cores, float64(m.MemoryBytes)/(1<<30), m.Kernel, m.GoVersion, m.Commit, m.NoFileSoft, m.NoFileHard)
	fmt.Fprintf(&b, "Command: `%s`  \n", strings.TrimSpace(r.Command))
	fmt.Fprintf(&b, "Load average (1 min): %.2f at the start, %.2f at the end; the load generator adds about one core, anything above that is other work skewing the figures.  \n", m.LoadAvg, r.LoadAvgEnd)
	if m.Pin.Enabled {
		fmt.Fprintf(&b, "Pinned (--pin): smp-server on CPU %s (%s), the load generator on CPU %s (%s); server CPU is read from /proc, so it is the server's own.\n\n",
			m.Pin.ServerCPUs, coresText(m.Pin.ServerCores), m.Pin.GeneratorCPUs, coresText(m.Pin.GenCores))
	} else {
		if m.Pin.Note != "" && !strings.HasPrefix(m.Pin.Note, "off (--pin=false)") {
			fmt.Fprintf(&b, "Pinning %s.  \n", m.Pin.Note)
		}
		b.WriteString("Load generator and server share the machine's cores; server CPU is read from /proc, so it is the server's own.\n\n")
	}

	b.WriteString(r.summary())
	if len(r.Goals) > 0 {
		b.WriteString("## Goals\n\n| goal | measured | met |\n|---|---|---|\n")
		for _, g := range r.Goals {
			fmt.Fprintf(&b, "| %s | %s | %s |\n", g.Goal, g.Measured, map[bool]string{true: "yes", false: "no"}[g.Met])
		}
		b.WriteString("\n")
	}
	if c := r.Crypto; c != nil {
		b.WriteString("## crypto-limit (one core)\n\n| operation | µs |\n|---|---|\n")
		for _, o := range c.Ops {
			fmt.Fprintf(&b, "| %s | %.2f |\n", o.Name, o.NsOp/1e3)
		}
		fmt.Fprintf(&b, "\nAll-cores factor: %.2f (an Ed25519 verification on every core at once costs %.2f× its CPU time alone).\n", c.AllCoresFactor, c.AllCoresFactor)
		fmt.Fprintf(&b, "\n| cycle | crypto µs, one core alone | µs, all cores busy | limit on %d cores /s (alone) | terms (alone) |\n|---|---|---|---|---|\n", c.Cores)
		for _, cy := range c.Cycles {
			fmt.Fprintf(&b, "| %s | %.1f | %.1f | %.0f | %s |\n", cy.Name, cy.NsPerOp/1e3, cy.NsAllCores/1e3, cy.LimitOps, cy.Terms)
		}
		fmt.Fprintf(&b, "\nFormula: %s Body %d bytes, block %d bytes.\n\n", c.Formula, c.BodySize, c.BlockSize)
	}
	relayTable := func(title string, pts []RelayPoint) {
		if len(pts) == 0 {
			return
		}
		fmt.Fprintf(&b, "## %s\n\n", title)
		// Pinned runs add the server-only columns; --pin=false tables stay as they were.
		pinned := slices.ContainsFunc(pts, func(p RelayPoint) bool { return p.ServerCores > 0 })
		b.WriteString("| series | pairs | msg/s | p50 ms | p99 ms | p99.9 ms | server CPU µs/msg | ÷ crypto | ÷ crypto, all cores busy | ÷ limit | server-bound msg/s | load gen CPU µs/msg | server RSS MiB | other load, cores | errors |")
		if pinned {
			b.WriteString(" msg/s per server core | ÷ crypto limit per core | non-crypto server CPU µs/msg |")
		}
		b.WriteString("\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
		if pinned {
			b.WriteString("---|---|---|")
		}
		b.WriteString("\n")
		for _, p := range pts {
			name := p.Series
			if p.Paced {
				name += fmt.Sprintf(" (paced at %.0f/s)", p.TargetRate)
			}
			fmt.Fprintf(&b, "| %s | %d | %.0f | %.2f | %.2f | %.2f | %.0f | %.2f× | %.2f× | %.0f%% | %.0f | %.0f | %.0f | %.2f | %d |", name, p.Pairs, p.Throughput,
				p.P50Ms, p.P99Ms, p.P999Ms, p.ServerCPUPerMsg, p.CPUOverCrypto, p.CPUOverCryptoBusy, 100*p.OverLimit, p.ServerBound, p.LoadGenCPUPerMsg,
				float64(p.ServerRSS)/(1<<20), p.OtherCores, p.Errors)
			switch {
			case !pinned:
			case p.PerServerCore > 0:
				fmt.Fprintf(&b, " %.0f | %.0f%% of %.0f | %.0f |", p.PerServerCore, 100*p.PerCoreOverLimit, p.CoreLimit, p.NonCryptoPerMsg)
			default:
				b.WriteString(" | | |")
			}
			b.WriteString("\n")
		}
		b.WriteString("\n÷ crypto: server CPU per message over the crypto cost of a message on one core alone (crypto-limit); " +
			"÷ crypto, all cores busy: over that cost × the all-cores factor. ÷ limit: throughput over the " +
			"crypto limit of all cores. Server-bound: cores ÷ server CPU per message, the rate if the load generator did not share the cores. " +
			"Other load: CPU used by other processes meanwhile (/proc/stat less the server and the load generator); above ~0.1 core the machine was shared.\n")
		if pinned {
			b.WriteString("\nPinned runs: msg/s per server core is the throughput over the cores the server was pinned to; ÷ crypto limit per core " +
				"sets it against 1 s ÷ the one-core crypto cost of a message (the stdlib crypto limit of one core); non-crypto server CPU is the " +
				"server's CPU per delivered message less that crypto cost: what the relay spends on everything else.\n")
		}
		b.WriteString("\n")
	}
	var signed, unsigned []RelayPoint
	for _, p := range r.Relay {
		if p.Series == "unsigned" {
			unsigned = append(unsigned, p)
		} else {
			signed = append(signed, p)
		}
	}
	if r.HalfPeak != nil {
		signed = append(signed, *r.HalfPeak)
	}
	if len(signed) > 0 {
		fmt.Fprintf(&b, "Relay points: %s measured after %s warm-up, %d queue(s) per pair, window %d, %d-byte bodies, pre-signed transmissions.\n\n",
			r.Config["duration"], r.Config["warmup"], r.Config["queuesPerPair"], r.Config["window"], r.Config["bodyBytes"])
	}
	relayTable("relay-signed", signed)
	relayTable("relay-unsigned (SEND unsigned; ACK signed by RK)", unsigned)
	relayTable("fsync (relay-signed, Ed25519)", r.Fsync)
	if len(r.Handshakes) > 0 {
		b.WriteString("## handshakes\n\n| KEM | dialers | handshakes/s | limit /s | ÷ limit | server CPU µs each | ÷ crypto | server-bound /s | other load, cores | errors |\n|---|---|---|---|---|---|---|---|---|---|\n")
		for _, h := range r.Handshakes {
			fmt.Fprintf(&b, "| %s | %d | %.0f | %.0f | %.0f%% | %.0f | %.2f× | %.0f | %.2f | %d |\n", h.KEM, h.Dialers, h.PerSecond, h.Limit, 100*h.OverLimit,
				h.ServerCPUPer, h.CPUOverCrypto, h.ServerBound, h.OtherCores, h.Errors)
		}
		b.WriteString("\nThe dialers run on the same cores and pay their half of each handshake (sealing the hello), so ÷ limit is bounded by the share of CPU the server gets; server CPU ÷ crypto is the server's own efficiency.\n\n")
	}
	if id := r.Idle; id != nil {
		fmt.Fprintf(&b, "## idle-connections (%s transport key)\n\n", id.KEM)
		fmt.Fprintf(&b, "Server RSS with no connection: %.1f MiB; the server's own limit: %d connections.\n\n", float64(id.BaseRSS)/(1<<20), id.ServerMax)
		b.WriteString("| connections | server RSS MiB | bytes/conn since baseline | open s | probed | delivered |\n|---|---|---|---|---|---|\n")
		for _, s := range id.Steps {
			fmt.Fprintf(&b, "| %d | %.1f | %.0f | %.1f | %d | %d |\n", s.Conns, float64(s.RSS)/(1<<20), s.PerConn, s.OpenSeconds, s.Probed, s.Delivered)
		}
		fmt.Fprintf(&b, "\nSlope: **%.0f bytes (%.1f KiB) of server RSS per idle subscribed connection**. ", id.SlopeBytes, id.SlopeBytes/1024)
		if id.At100k > 0 {
			fmt.Fprintf(&b, "At that slope 100k connections need %.2f GiB and 1M need %.1f GiB, on a machine whose open-file limit allows them. ",
				float64(id.At100k)/(1<<30), float64(id.At1M)/(1<<30))
		}
		fmt.Fprintf(&b, "Stopped by: %s. %d worker processes.\n\n", id.StoppedBy, id.Workers)
	}
	if r.Hostile != nil {
		b.WriteString(r.Hostile.markdown())
	}
	b.WriteString(r.storageMarkdown())
	if r.Contacts != nil {
		b.WriteString(r.Contacts.markdown())
	}
	if len(r.Files) > 0 {
		b.WriteString("Files: ")
		for i, f := range r.Files {
			if i > 0 {
				b.WriteString(", ")
			}
			if strings.HasSuffix(f, ".svg") {
				fmt.Fprintf(&b, "![%s](%s)", f, f)
			} else {
				b.WriteString(f)
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

// summary is the headline table: one row per scenario result, what the
// performance doc (docs/performance.md) quotes.
func (r *Report) summary() string {
	var rows [][2]string
	add := func(k, v string) { rows = append(rows, [2]string{k, v}) }
	if c := r.Crypto; c != nil {
		for _, n := range []string{"signed-ed25519", "signed-rsa2048", "unsigned"} {
			cy := c.cycle(n)
			add("crypto limit, "+n, fmt.Sprintf("%.0f msg/s on %d cores (%.1f µs of crypto per message on one core alone, %.1f µs with all cores busy)",
				cy.LimitOps, c.Cores, cy.NsPerOp/1e3, cy.NsAllCores/1e3))
		}
	}
	for _, s := range []string{"signed-ed25519", "signed-rsa2048", "unsigned"} {
		if p := r.best(s); p != nil {
			add("relay "+s+", peak", fmt.Sprintf("%.0f msg/s at %d pairs (%.0f%% of the limit), p50 %.2f ms, p99 %.2f ms; server %.0f µs CPU/msg (%.2f× crypto, %.2f× with all cores busy; %.0f msg/s with the cores to itself)",
				p.Throughput, p.Pairs, 100*p.OverLimit, p.P50Ms, p.P99Ms, p.ServerCPUPerMsg, p.CPUOverCrypto, p.CPUOverCryptoBusy, p.ServerBound))
		}
	}
	for _, s := range []string{"signed-ed25519", "signed-rsa2048"} {
		if p := r.best(s); p != nil && p.PerServerCore > 0 {
			add("relay "+s+", peak, per server core", fmt.Sprintf("%.0f msg/s per server core (%s) = %.0f%% of the stdlib crypto limit per core (%.0f msg/s); non-crypto server CPU %.0f µs per delivered message (%.0f µs − %.0f µs of crypto)",
				p.PerServerCore, coresText(p.ServerCores), 100*p.PerCoreOverLimit, p.CoreLimit, p.NonCryptoPerMsg, p.ServerCPUPerMsg, p.CryptoPerMsg))
		}
	}
	if h := r.HalfPeak; h != nil {
		add("relay signed-ed25519, half of peak (paced)", fmt.Sprintf("%.0f msg/s: p50 %.2f ms, p99 %.2f ms, p99.9 %.2f ms", h.Throughput, h.P50Ms, h.P99Ms, h.P999Ms))
	}
	for _, p := range r.Fsync {
		v := fmt.Sprintf("%.0f msg/s at %d pairs, p99 %.2f ms, server %.0f µs CPU/msg (%.2f× crypto)", p.Throughput, p.Pairs, p.P99Ms, p.ServerCPUPerMsg, p.CPUOverCrypto)
		if p.Paced {
			v = fmt.Sprintf("%.0f msg/s paced: p50 %.2f ms, p99 %.2f ms", p.Throughput, p.P50Ms, p.P99Ms)
		}
		add(p.Series, v)
	}
	for _, h := range r.Handshakes {
		add("handshakes "+h.KEM, fmt.Sprintf("%.0f/s (%.0f%% of the limit %.0f/s); server %.0f µs CPU each (%.2f× the open)", h.PerSecond, 100*h.OverLimit, h.Limit, h.ServerCPUPer, h.CPUOverCrypto))
	}
	if id := r.Idle; id != nil && len(id.Steps) > 0 {
		last := id.Steps[len(id.Steps)-1]
		add("idle subscribed connections", fmt.Sprintf("%.1f KiB server RSS each (slope to %d connections, %d/%d probes delivered); 100k → %.2f GiB, 1M → %.1f GiB",
			id.SlopeBytes/1024, last.Conns, last.Delivered, last.Probed, float64(id.At100k)/(1<<30), float64(id.At1M)/(1<<30)))
	}
	r.storageSummary(add)
	if len(rows) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("## Summary\n\n| scenario | result |\n|---|---|\n")
	for _, row := range rows {
		fmt.Fprintf(&b, "| %s | %s |\n", row[0], row[1])
	}
	b.WriteString("\n")
	return b.String()
}

// coresText is "1 core" or "n cores".
func coresText(n int) string {
	if n == 1 {
		return "1 core"
	}
	return fmt.Sprintf("%d cores", n)
}
