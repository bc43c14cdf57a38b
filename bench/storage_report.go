package main

import (
	"cmp"
	"fmt"
	"strings"
)

// issueMessages, issueBody and issueQueues are the fill issue 14 states its
// bounds for; a run of other sizes says so beside its bounds.
const (
	issueMessages = 160000
	issueBody     = 7168
	issueQueues   = 256
)

// hitRateText is the cold read's cache hit rate, or "n/a".
func hitRateText(cr *ColdRead) string {
	if cr == nil || cr.HitRate == nil {
		return "n/a"
	}
	return fmt.Sprintf("%.1f%%", 100**cr.HitRate)
}

// boundsMarkdown renders bounds as "meets"/"misses" lines.
func boundsMarkdown(b *strings.Builder, bounds []Bound, caveat string) {
	if len(bounds) == 0 {
		return
	}
	b.WriteString("Bounds (issue 14)")
	if caveat != "" {
		b.WriteString(", " + caveat)
	}
	b.WriteString(":\n\n")
	for _, x := range bounds {
		verdict := "**misses**"
		if x.Meets {
			verdict = "meets"
		}
		fmt.Fprintf(b, "- %s: %s — %s\n", verdict, x.Bound, x.Measured)
	}
	b.WriteString("\n")
}

// stepsTable renders the readings of a storage scenario.
func stepsTable(b *strings.Builder, steps []StorageStep) {
	b.WriteString("| queues | messages | bodies stored MiB | server RSS MiB | RssAnon MiB | RssFile MiB | Go heap in use MiB | step s | settle s |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|\n")
	for _, st := range steps {
		heap := "—"
		if st.HeapInuse > 0 {
			heap = fmt.Sprintf("%.1f", mib(st.HeapInuse))
		}
		fmt.Fprintf(b, "| %d | %d | %.1f | %.1f | %.1f | %.1f | %s | %.2f | %.2f |\n", st.Queues, st.Messages, float64(st.StoredBytes)/(1<<20),
			mib(st.RSS), mib(st.RSSAnon), mib(st.RSSFile), heap, st.StepSeconds, st.SettleSeconds)
	}
	b.WriteString("\n")
}

// restartMarkdown renders a restart against the empty relay's start.
func restartMarkdown(b *strings.Builder, rs *StorageRestart, e *EmptyStart, du int64) {
	if rs == nil || e == nil {
		return
	}
	fmt.Fprintf(b, "Restart: stop (SIGTERM to exit) %.2f s; data directory %.2f GiB on disk; start to \"listening on\" **%.3f s**, "+
		"%.2f× the empty relay's %.3f s (median of %d restarts; its first start %.3f s); RSS after the restart **%.1f MiB** (RssAnon %.1f MiB; the empty relay %.1f MiB).\n\n",
		rs.StopSeconds, float64(du)/(1<<30), rs.StartSeconds, rs.Ratio, e.MedianSeconds, len(e.RestartSeconds), e.FreshSeconds, mib(rs.RSS), mib(rs.RSSAnon), mib(e.RSS))
}

// storageMarkdown renders the storage scenarios, and once how their
// figures were read.
func (r *Report) storageMarkdown() string {
	var b strings.Builder
	note := ""
	if m := r.StorageMessages; m != nil {
		b.WriteString(m.markdown())
		note = m.Note
	}
	if q := r.StorageQueues; q != nil {
		b.WriteString(q.markdown())
		note = cmp.Or(note, q.Note)
	}
	if note != "" {
		b.WriteString("Storage scenarios, method: " + note + "\n\n")
	}
	return b.String()
}

// markdown renders the storage-messages scenario.
func (r *StorageMessagesResult) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "## storage-messages (--store %s)\n\n", r.Store)
	fmt.Fprintf(&b, "%d messages of %d bytes (%.2f GiB of bodies) round-robin over %d secured queues (Ed25519), each body fresh random bytes "+
		"and signed, sent by %d connections with %d SENDs in flight; relay flags `%s`.\n\n",
		r.Messages, r.BodyBytes, float64(r.Messages)*float64(r.BodyBytes)/(1<<30), r.Queues, r.Connections, r.InFlight, r.ServerArgs)
	fmt.Fprintf(&b, "Server RSS at start, no queue: %.1f MiB.\n\n", mib(r.BaseRSS))
	stepsTable(&b, r.Steps)
	if r.FillSeconds > 0 {
		fmt.Fprintf(&b, "Fill: %.1f s of sending, %.0f msg/s. Slope: **%.1f bytes of server RSS per stored message** (%.4f per body byte).\n\n",
			r.FillSeconds, r.FillRate, r.PerMessage, r.PerMessage/float64(r.BodyBytes))
	}
	restartMarkdown(&b, r.Restart, r.Empty, r.DataDirBytes)
	if cr := r.ColdRead; cr != nil {
		fmt.Fprintf(&b, "Cold read after the restart: %d of %d messages (%d with a wrong body length) from %d queues over %d connections, "+
			"SUB then ACK until OK on every queue at once, in %.2f s: **%.0f msg/s**, relay CPU %.2f s; RSS after %.1f MiB. Cache hit rate: **%s**",
			cr.Received, cr.Expected, cr.BadBodies, cr.Queues, cr.Connections, cr.Seconds, cr.Rate, cr.ServerCPU, mib(cr.RSSAfter), hitRateText(cr))
		switch {
		case cr.HitRate != nil:
			fmt.Fprintf(&b, " (%.0f hits, %.0f misses; %s)", cr.CacheHits, cr.CacheMisses, cr.CacheNote)
		case cr.CacheNote != "":
			fmt.Fprintf(&b, " (%s)", cr.CacheNote)
		}
		b.WriteString(".\n\n")
	}
	caveat := ""
	if r.Messages != issueMessages || r.BodyBytes != issueBody || r.Queues != issueQueues {
		caveat = fmt.Sprintf("stated for %d × %d B in %d queues; this run stored %d × %d B in %d", issueMessages, issueBody, issueQueues, r.Messages, r.BodyBytes, r.Queues)
	}
	boundsMarkdown(&b, r.Bounds, caveat)
	return b.String()
}

// markdown renders the storage-queues scenario.
func (r *StorageQueuesResult) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "## storage-queues (--store %s)\n\n", r.Store)
	kind := "empty queues (NEW only, an Ed25519 recipient key each)"
	if r.Secured {
		kind = "secured queues (NEW with an Ed25519 recipient key each, then KEY with a sender key)"
	}
	fmt.Fprintf(&b, "%d %s, made by %d connections with %d commands in flight, each step's connections closed before its reading; relay flags `%s`.\n\n",
		r.Queues, kind, r.Connections, r.InFlight, r.ServerArgs)
	stepsTable(&b, r.Steps)
	if r.CreateSeconds > 0 {
		fmt.Fprintf(&b, "Creation: %.1f s, %.0f queues/s. Slope: **%.1f bytes of server RSS per queue**.\n\n", r.CreateSeconds, r.CreateRate, r.PerQueue)
	}
	if len(r.MessageSteps) > 0 {
		fmt.Fprintf(&b, "Then %d messages of %d bytes round-robin over the queues (%s), in %.1f s of sending:\n\n", r.Messages, r.MessageBody,
			map[bool]string{true: "SENDs signed by one sender key all the queues share", false: "unsigned SENDs"}[r.Secured], r.FillSeconds)
		stepsTable(&b, r.MessageSteps)
		fmt.Fprintf(&b, "Slope: %.1f bytes of server RSS per stored message.\n\n", r.PerMessage)
	}
	restartMarkdown(&b, r.Restart, r.Empty, r.DataDirBytes)
	boundsMarkdown(&b, r.Bounds, "")
	return b.String()
}

// storageSummary adds the storage scenarios' rows to the summary table.
func (r *Report) storageSummary(add func(k, v string)) {
	if m := r.StorageMessages; m != nil && m.Restart != nil {
		add("storage-messages (--store "+m.Store+")", fmt.Sprintf("%d × %d B in %d queues: RSS %.1f MiB after the fill, %.1f MiB after the restart; "+
			"%.1f B RSS per stored message; restart %.3f s (%.2f× empty); cold read %.0f msg/s, cache hit rate %s",
			m.Messages, m.BodyBytes, m.Queues, mib(m.RSSAfterFill), mib(m.Restart.RSS), m.PerMessage, m.Restart.StartSeconds, m.Restart.Ratio,
			coldRate(m.ColdRead), hitRateText(m.ColdRead)))
	}
	if q := r.StorageQueues; q != nil && q.Restart != nil {
		v := fmt.Sprintf("%d queues: %.1f B RSS per queue; restart %.3f s (%.2f× empty), RSS after %.1f MiB", q.Queues, q.PerQueue,
			q.Restart.StartSeconds, q.Restart.Ratio, mib(q.Restart.RSS))
		if q.Messages > 0 {
			v = fmt.Sprintf("%d queues + %d messages of %d B: %.1f B RSS per queue; restart %.3f s (%.2f× empty), RSS after %.1f MiB",
				q.Queues, q.Messages, q.MessageBody, q.PerQueue, q.Restart.StartSeconds, q.Restart.Ratio, mib(q.Restart.RSS))
		}
		add("storage-queues (--store "+q.Store+")", v)
	}
}

func coldRate(cr *ColdRead) float64 {
	if cr == nil {
		return 0
	}
	return cr.Rate
}

// storageCharts are RSS against stored messages and against queues, with
// issue 14's 256 MiB bound as a line.
func (r *Report) storageCharts() []chart {
	var out []chart
	bound := series{name: "256 MiB bound", ys: []float64{256}, limit: true}
	rssSeries := func(steps []StorageStep, x func(StorageStep) int) []series {
		var xs, rss, anon, heap []float64
		for _, st := range steps {
			xs = append(xs, float64(x(st)))
			rss, anon, heap = append(rss, mib(st.RSS)), append(anon, mib(st.RSSAnon)), append(heap, mib(st.HeapInuse))
		}
		ss := []series{{name: "VmRSS", xs: xs, ys: rss}, {name: "RssAnon", xs: xs, ys: anon, dashed: true}}
		if len(steps) > 0 && steps[len(steps)-1].HeapInuse > 0 {
			ss = append(ss, series{name: "Go heap in use", xs: xs, ys: heap, dashed: true})
		}
		return ss
	}
	if m := r.StorageMessages; m != nil && len(m.Steps) > 1 {
		out = append(out, chart{"storage-rss-messages", lineChart(fmt.Sprintf("Server RSS against stored messages (%d B bodies, %d queues, --store %s)", m.BodyBytes, m.Queues, m.Store),
			"stored messages", "MiB", false, append(rssSeries(m.Steps, func(st StorageStep) int { return st.Messages }), bound))})
	}
	if q := r.StorageQueues; q != nil && len(q.Steps) > 1 {
		out = append(out, chart{"storage-rss-queues", lineChart(fmt.Sprintf("Server RSS against queues (--store %s)", q.Store),
			"queues", "MiB", false, append(rssSeries(q.Steps, func(st StorageStep) int { return st.Queues }), bound))})
	}
	return out
}
