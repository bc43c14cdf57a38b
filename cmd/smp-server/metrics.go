package main

// The metrics endpoint (--metrics-listen): Prometheus text format on
// /metrics, a liveness answer on /healthz. Every figure is an aggregate over
// the whole relay: no label names a queue, a client, an address or anything
// else per client (SPEC §8), only the fixed label values listed below.
//
// The engine and the store keep their own lock-free counters and histograms
// (engine/metrics.go, wal/metrics.go) and do not import Prometheus; the
// collector below reads their snapshots at scrape time and emits constant
// metrics, so the relay's hot paths pay a few atomic adds and nothing else.
// It reads the store through interfaces (store.StatsReporter, and
// syncHistograms for the wal's histograms), not through its concrete type.
//
//	name                              type       labels             meaning
//	smp_build_info                    gauge      version, key_type  always 1; the binary's version and the transport key's kind
//	smp_connections_open              gauge      -                  connections open now
//	smp_sources                       gauge      -                  sources (IPv4 addresses, IPv6 prefixes) held for per-source limits
//	smp_connections_accepted_total    counter    -                  connections accepted (under --max-conns)
//	smp_connections_rejected_total    counter    reason             connections refused or dropped by a limit: max_conns (at accept),
//	                                                                idle (--idle-timeout), outbound (--max-outbound: the client does
//	                                                                not read), flood (256 blocks waiting beyond --blocks-per-second),
//	                                                                fd_limit (at accept: the open-file limit is reached),
//	                                                                per_source (--max-conns-per-source), handshake_rate
//	                                                                (--handshakes-per-source)
//	smp_handshakes_total              counter    kem, outcome       client hellos (SPEC §3.2) by the transport key's kind and outcome:
//	                                                                ok, bad_hello (does not open or does not fit), timeout
//	                                                                (--handshake-timeout), closed (the client left first)
//	smp_commands_total                counter    command, result    transmissions handled: command NEW SUB KEY ACK OFF DEL SEND PING, or
//	                                                                other when the name did not parse; result ok or the SPEC §6 error
//	                                                                in lower case: syntax unknown prohibited size auth quota internal
//	smp_queues                        gauge      -                  live queues
//	smp_messages_stored               gauge      -                  stored messages, delivered or not
//	smp_message_bytes_stored          gauge      -                  bytes of stored message bodies
//	smp_messages_expired_total        counter    -                  messages deleted by --message-ttl
//	smp_messages_lost_total           counter    -                  messages deleted because the store lost their bodies (store.ErrBodyLost)
//	smp_queues_expired_total          counter    reason             queues deleted by expiry: suspended (--suspended-ttl), unsecured
//	                                                                (--unsecured-ttl)
//	smp_quota_refusals_total          counter    reason             commands answered ERR QUOTA, by the limit: quota, max_stored_bytes,
//	                                                                max_queues, new_queues_per_minute
//	smp_limit_max_stored_bytes        gauge      -                  --max-stored-bytes in force (+Inf: no limit)
//	smp_limit_max_queues              gauge      -                  --max-queues in force (+Inf: no limit)
//	smp_delivery_latency_seconds      histogram  -                  SEND stored → MSG written to the subscriber's block; first delivery of
//	                                                                messages stored by this process only; 50 µs … 13 s doubling, then
//	                                                                1 min, 10 min, 1 h, 6 h, 1 d, 1 week for messages that waited
//	smp_blocks_total                  counter    direction          transport blocks read (in) and written (out)
//	smp_bytes_total                   counter    direction          bytes read (in: opened client hellos and whole blocks) and written
//	                                                                (out: server hellos and blocks)
//	smp_wal_fsync_seconds             histogram  -                  latency of each fsync of a log segment (--store disk and wal)
//	smp_wal_batch_records             histogram  -                  records per group written (one write, and in --fsync always one fsync)
//	smp_wal_bytes_written_total       counter    -                  bytes written to log segments, frames included
//	smp_wal_compactions_total         counter    -                  log compactions completed, the start-up one included
//	smp_store_body_bytes              gauge      -                  bytes the body files occupy on disk (--store disk only, as the
//	                                                                five below)
//	smp_store_body_files              gauge      -                  body files (segments)
//	smp_store_cache_hits_total        counter    -                  bodies delivered from the body cache
//	smp_store_cache_misses_total      counter    -                  bodies read from the body files
//	smp_store_cache_bytes             gauge      -                  bytes the body cache holds
//	smp_store_cache_max_bytes         gauge      -                  the cache bound in force (--cache-size)
//
// Plus the Go runtime's go_* and the process's process_* metrics.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"runtime/debug"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/smprelay/smprelay/engine"
	"github.com/smprelay/smprelay/internal/metric"
	"github.com/smprelay/smprelay/store"
	"github.com/smprelay/smprelay/transport"
)

// metricsSource is what the metrics endpoint reads. Only aggregates are
// exported (SPEC §8): no label names a queue, a client or an address.
type metricsSource struct {
	Engine *engine.Engine
	Server *transport.Server
	// Store is the persistent store's counters; nil with --store memory
	// (never a typed nil: the smp_wal_* metrics are emitted when it is set).
	Store   store.StatsReporter
	KeyType string // the transport key's kind
	// Draining reports that a SIGTERM/SIGINT drain has begun (/healthz then
	// answers 503 so a load balancer stops sending); nil means never.
	Draining func() bool
}

// syncHistograms is a store that times its fsyncs and counts the records of
// each write group (the wal, wal.Log.Histograms).
type syncHistograms interface {
	// Histograms returns the fsync latencies in nanoseconds and the records
	// per write group.
	Histograms() (fsync, batch metric.Snapshot)
}

// startMetrics serves /metrics and /healthz on addr until stop is called.
// It returns the bound address (the real port when addr's port is 0).
func startMetrics(addr string, src metricsSource, log *slog.Logger) (bound net.Addr, stop func(context.Context) error, err error) {
	if src.Engine == nil || src.Server == nil {
		return nil, nil, errors.New("metrics: an engine and a server are needed")
	}
	reg := prometheus.NewRegistry()
	if err := reg.Register(newRelayCollector(src)); err != nil {
		return nil, nil, fmt.Errorf("metrics: registering the relay collector: %w", err)
	}
	if err := reg.Register(collectors.NewGoCollector()); err != nil {
		return nil, nil, fmt.Errorf("metrics: registering the Go collector: %w", err)
	}
	if err := reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		return nil, nil, fmt.Errorf("metrics: registering the process collector: %w", err)
	}

	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:            promLogger{log},
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: 4, // scrapes are cheap, but a flood of them is not
		Timeout:             10 * time.Second,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if reason := src.unhealthy(); reason != "" {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, reason)
			return
		}
		fmt.Fprintln(w, "ok")
	})

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("metrics: binding %s: %w", addr, err)
	}
	// start warns about a non-loopback address before it gets here.
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics endpoint stopped", "err", err)
		}
	}()
	log.Info("metrics endpoint started", "addr", ln.Addr().String())
	stop = func(ctx context.Context) error {
		err := srv.Shutdown(ctx)
		if err != nil {
			err = errors.Join(fmt.Errorf("metrics: shutting down: %w", err), srv.Close())
		}
		<-done
		return err
	}
	return ln.Addr(), stop, nil
}

// unhealthy returns why /healthz answers 503, or "" when the relay serves.
func (src metricsSource) unhealthy() string {
	if src.Draining != nil && src.Draining() {
		return "draining: the relay is shutting down"
	}
	if src.Store != nil && src.Store.StoreStats().Failed {
		return "log failed: changes are refused until a restart"
	}
	return ""
}

// promLogger routes promhttp's error lines into slog.
type promLogger struct{ log *slog.Logger }

func (l promLogger) Println(v ...any) {
	l.log.Error("metrics: "+strings.TrimSpace(fmt.Sprintln(v...)), "from", "promhttp")
}

// relayCollector turns the engine's, the server's and the store's snapshots
// into Prometheus metrics at each scrape. It holds no state of its own, so
// concurrent scrapes are safe.
type relayCollector struct {
	src     metricsSource
	version string

	buildInfo, open, sources, accepted, rejected, handshakes, commands *prometheus.Desc
	queues, messages, messageBytes, expired, delivery, blocks, bytes   *prometheus.Desc
	lost, queuesExpired, quotaRefusals, maxStoredBytes, maxQueues      *prometheus.Desc
	walFsync, walBatch, walBytes, walCompactions                       *prometheus.Desc
	bodyBytes, bodyFiles, cacheHits, cacheMisses, cacheBytes, cacheMax *prometheus.Desc
}

func newRelayCollector(src metricsSource) *relayCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &relayCollector{
		src:     src,
		version: buildVersion(),

		buildInfo:  d("smp_build_info", "Always 1: the relay's version and its transport key's kind.", "version", "key_type"),
		open:       d("smp_connections_open", "Connections open now."),
		sources:    d("smp_sources", "Sources (IPv4 addresses, IPv6 prefixes) with connections now or in the last two minutes."),
		accepted:   d("smp_connections_accepted_total", "Connections accepted."),
		rejected:   d("smp_connections_rejected_total", "Connections refused or dropped by a limit, by the limit.", "reason"),
		handshakes: d("smp_handshakes_total", "Client hellos by the transport key's kind and outcome.", "kem", "outcome"),
		commands: d("smp_commands_total",
			"Transmissions handled, by command (other: the name did not parse) and result (ok or the error, lower case).",
			"command", "result"),
		queues:       d("smp_queues", "Live queues."),
		messages:     d("smp_messages_stored", "Stored messages, delivered or not."),
		messageBytes: d("smp_message_bytes_stored", "Bytes of stored message bodies."),
		expired:      d("smp_messages_expired_total", "Messages deleted by the message TTL."),
		lost:         d("smp_messages_lost_total", "Messages deleted because the store lost their bodies."),
		queuesExpired: d("smp_queues_expired_total",
			"Queues deleted by expiry, by reason: suspended (suspended TTL) or unsecured (never secured, unsecured TTL).", "reason"),
		quotaRefusals: d("smp_quota_refusals_total", "Commands answered ERR QUOTA, by the limit that refused them.", "reason"),
		maxStoredBytes: d("smp_limit_max_stored_bytes",
			"The relay-wide cap on stored message body bytes in force (+Inf: no limit)."),
		maxQueues: d("smp_limit_max_queues", "The relay-wide cap on queues in force (+Inf: no limit)."),
		delivery: d("smp_delivery_latency_seconds",
			"Time from a SEND storing a message to its first MSG written to the subscriber (messages stored by this process)."),
		blocks:         d("smp_blocks_total", "Transport blocks read (in) and written (out).", "direction"),
		bytes:          d("smp_bytes_total", "Transport bytes read (in) and written (out), hellos included.", "direction"),
		walFsync:       d("smp_wal_fsync_seconds", "Latency of each fsync of a log segment."),
		walBatch:       d("smp_wal_batch_records", "Records per group written to the log."),
		walBytes:       d("smp_wal_bytes_written_total", "Bytes written to log segments, frames included."),
		walCompactions: d("smp_wal_compactions_total", "Log compactions completed, the start-up one included."),
		bodyBytes:      d("smp_store_body_bytes", "Bytes the disk store's body files occupy on disk."),
		bodyFiles:      d("smp_store_body_files", "Body files (segments) of the disk store."),
		cacheHits:      d("smp_store_cache_hits_total", "Message bodies delivered from the disk store's cache."),
		cacheMisses:    d("smp_store_cache_misses_total", "Message bodies the disk store read from its files."),
		cacheBytes:     d("smp_store_cache_bytes", "Bytes of message bodies the disk store's cache holds."),
		cacheMax:       d("smp_store_cache_max_bytes", "The disk store's cache bound in force (--cache-size)."),
	}
}

// Describe implements prometheus.Collector.
func (c *relayCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.buildInfo, c.open, c.sources, c.accepted, c.rejected, c.handshakes, c.commands,
		c.queues, c.messages, c.messageBytes, c.expired, c.delivery, c.blocks, c.bytes,
		c.lost, c.queuesExpired, c.quotaRefusals, c.maxStoredBytes, c.maxQueues} {
		ch <- d
	}
	if c.src.Store != nil {
		ch <- c.walBytes
		ch <- c.walCompactions
	}
	if _, ok := c.src.Store.(cacheSizer); ok {
		for _, d := range []*prometheus.Desc{c.bodyBytes, c.bodyFiles, c.cacheHits, c.cacheMisses, c.cacheBytes, c.cacheMax} {
			ch <- d
		}
	}
	if _, ok := c.src.Store.(syncHistograms); ok {
		ch <- c.walFsync
		ch <- c.walBatch
	}
}

// Collect implements prometheus.Collector.
func (c *relayCollector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	gauge(c.buildInfo, 1, c.version, c.src.KeyType)

	sm := c.src.Server.Metrics()
	gauge(c.open, sm.Open)
	gauge(c.sources, sm.Sources)
	counter(c.accepted, sm.Accepted)
	for i, n := range sm.Rejected {
		counter(c.rejected, n, transport.RejectLabels[i])
	}
	for i, n := range sm.Handshakes {
		counter(c.handshakes, n, sm.KEM, transport.HandshakeLabels[i])
	}
	counter(c.blocks, sm.BlocksIn, "in")
	counter(c.blocks, sm.BlocksOut, "out")
	counter(c.bytes, sm.BytesIn, "in")
	counter(c.bytes, sm.BytesOut, "out")

	em := c.src.Engine.Metrics()
	for cmd := range em.Commands {
		for res, n := range em.Commands[cmd] {
			counter(c.commands, n, engine.CommandLabels[cmd], engine.ResultLabels[res])
		}
	}
	gauge(c.queues, em.Queues)
	gauge(c.messages, em.Messages)
	gauge(c.messageBytes, em.BodyBytes)
	counter(c.expired, em.Expired)
	counter(c.lost, em.Lost)
	for i, n := range em.QueuesExpired {
		counter(c.queuesExpired, n, engine.ExpiredQueueLabels[i])
	}
	for i, n := range em.Quota {
		counter(c.quotaRefusals, n, engine.QuotaLabels[i])
	}
	lim := c.src.Engine.Limits()
	ch <- prometheus.MustNewConstMetric(c.maxStoredBytes, prometheus.GaugeValue, limitValue(lim.MaxStoredBytes))
	ch <- prometheus.MustNewConstMetric(c.maxQueues, prometheus.GaugeValue, limitValue(lim.MaxQueues))
	ch <- constHistogram(c.delivery, &em.Delivery, 1e9)

	if c.src.Store != nil {
		st := c.src.Store.StoreStats()
		counter(c.walBytes, st.DiskBytes)
		counter(c.walCompactions, st.Compactions)
		if _, ok := c.src.Store.(cacheSizer); ok {
			gauge(c.bodyBytes, st.BodyBytes)
			gauge(c.bodyFiles, int64(st.BodyFiles))
			counter(c.cacheHits, st.CacheHits)
			counter(c.cacheMisses, st.CacheMisses)
			gauge(c.cacheBytes, st.CacheBytes)
			gauge(c.cacheMax, st.CacheMax)
		}
	}
	if h, ok := c.src.Store.(syncHistograms); ok {
		fsync, batch := h.Histograms()
		ch <- constHistogram(c.walFsync, &fsync, 1e9)
		ch <- constHistogram(c.walBatch, &batch, 1)
	}
}

// limitValue is a cap for a gauge: a negative cap (no limit) is +Inf, so a
// ratio of use to cap stays meaningful.
func limitValue(n int64) float64 {
	if n < 0 {
		return math.Inf(1)
	}
	return float64(n)
}

// constHistogram converts a snapshot into a Prometheus histogram, dividing
// its values by per (1e9: nanoseconds to seconds; a division, so that bounds
// such as 60 s print as 60 and not as 60.00000000000001).
func constHistogram(d *prometheus.Desc, s *metric.Snapshot, per float64) prometheus.Metric {
	buckets := make(map[float64]uint64, len(s.Bounds))
	var cum uint64
	for i, b := range s.Bounds {
		cum += s.Counts[i]
		buckets[float64(b)/per] = cum
	}
	return prometheus.MustNewConstHistogram(d, s.Count(), s.Sum/per, buckets)
}

// buildVersion is the relay's version for smp_build_info: the module
// version, or for a development build "devel" and the VCS revision.
func buildVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	rev := revision
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && rev == "" {
			rev = s.Value
		}
	}
	if len(rev) >= 12 {
		return "devel+" + rev[:12]
	}
	return "devel"
}
