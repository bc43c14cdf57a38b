package main

// The metrics endpoint, in process: a real engine, gnet server and log on
// 127.0.0.1, real SMP traffic from internal/smptest, and /metrics scraped
// over HTTP and parsed with expfmt. Every value is read after the replies
// that caused it, and the relay counts before it writes, so no wait is
// needed. Deadlines only stop a test that would otherwise hang.

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"log/slog"
	"math"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/engine"
	"github.com/smprelay/smprelay/internal/smptest"
	"github.com/smprelay/smprelay/store"
	"github.com/smprelay/smprelay/transport"
	"github.com/smprelay/smprelay/wal"
)

// relay is an in-process relay with its metrics endpoint.
type relay struct {
	e        *engine.Engine
	srv      *transport.Server
	log      *wal.Log // nil with the memory store
	key      *codec.KEMPrivateKey
	addr     string // the relay's address
	metrics  string // the metrics endpoint's base URL
	draining atomic.Bool
	stop     func(context.Context) error
}

// startRelay starts an engine and a server on 127.0.0.1:0 (with a log in
// fsync mode always when withLog, and the server options that opts set) and
// the metrics endpoint on 127.0.0.1:0, wired as main wires them.
func startRelay(t *testing.T, withLog bool, opts ...func(*transport.ServerOptions)) *relay {
	t.Helper()
	r := &relay{}
	var err error
	if r.key, err = codec.GenerateKEMKey(codec.KEMX25519); err != nil {
		t.Fatal(err)
	}
	var st store.Store = store.MemoryStore{}
	if withLog {
		if r.log, err = wal.Open(t.TempDir(), wal.Options{Sync: wal.SyncAlways}); err != nil {
			t.Fatal(err)
		}
		st = r.log
	}
	if r.e, err = engine.New(engine.Options{Store: st}); err != nil {
		t.Fatal(err)
	}
	so := transport.ServerOptions{Engine: r.e, Key: r.key}
	for _, o := range opts {
		o(&so)
	}
	if r.srv, err = transport.NewServer(so); err != nil {
		t.Fatal(err)
	}
	addrc := make(chan net.Addr, 1)
	served := make(chan error, 1)
	go func() { served <- r.srv.Serve("127.0.0.1:0", func(a net.Addr) { addrc <- a }) }()
	select {
	case a := <-addrc:
		r.addr = a.String()
	case err := <-served:
		t.Fatalf("Serve: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), hangGuardIn)
		defer cancel()
		if err := r.srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if r.log != nil {
			if err := r.log.Close(); err != nil {
				t.Errorf("closing the log: %v", err)
			}
		}
	})

	src := metricsSource{Engine: r.e, Server: r.srv, KeyType: "x25519", Draining: r.draining.Load}
	if r.log != nil {
		src.Store = r.log // not a nil *wal.Log in the interface
	}
	bound, stop, err := startMetrics("127.0.0.1:0", src, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("startMetrics: %v", err)
	}
	r.metrics, r.stop = "http://"+bound.String(), stop
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), hangGuardIn)
		defer cancel()
		if err := stop(ctx); err != nil {
			t.Errorf("stopping the metrics endpoint: %v", err)
		}
	})
	return r
}

// hangGuardIn bounds every wait in these in-process tests.
const hangGuardIn = 30 * time.Second

// get fetches path from the metrics endpoint and returns the status and body.
func (r *relay) get(t *testing.T, path string) (int, string) {
	return smptest.HTTPGet(t, r.metrics+path)
}

// scrape is one parsed /metrics answer.
type scrape = smptest.Scrape

func (r *relay) scrape(t *testing.T) scrape { return smptest.ScrapeMetrics(t, r.metrics+"/metrics") }

// TestMetricsEndpoint: real traffic moves the counters it should, by exactly
// what it should, and no label carries anything per client.
func TestMetricsEndpoint(t *testing.T) {
	t.Parallel()
	r := startRelay(t, true)
	ctx, cancel := context.WithTimeout(context.Background(), hangGuardIn)
	defer cancel()
	bs := float64(codec.DefaultBlockSize)

	before := r.scrape(t)
	if v := before.Value(t, "smp_build_info", "version", buildVersion(), "key_type", "x25519"); v != 1 {
		t.Fatalf("smp_build_info = %v, want 1", v)
	}
	for _, name := range []string{"go_goroutines", "process_open_fds"} {
		if before[name] == nil {
			t.Errorf("no %s: the Go runtime and process collectors are missing", name)
		}
	}

	dialIn := func() *smptest.Conn {
		c, err := smptest.Dial(ctx, r.addr, r.key.Public().Fingerprint())
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	sends := 0 // blocks the clients send: each Send below is one block
	roundTrip := func(c *smptest.Conn, tx []byte, want codec.Cmd) smptest.Response {
		t.Helper()
		if err := c.Send(tx); err != nil {
			t.Fatalf("send: %v", err)
		}
		sends++
		resp, err := c.Next(ctx)
		if err != nil {
			t.Fatalf("reading the reply: %v", err)
		}
		if resp.Cmd != want {
			t.Fatalf("got %v, want %v", resp, want)
		}
		return resp
	}
	signer := func() *codec.Signer {
		s, err := codec.GenerateSigner(codec.SigEd25519, 0)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	rk, sk, stranger := signer(), signer(), signer()

	rc, sc := dialIn(), dialIn()
	ids := roundTrip(rc, smptest.Cmd(rk, "n", nil, codec.CmdNEW, rk.PublicSPKI(), nil), codec.CmdIDS)
	rid, sid := ids.RID, ids.SID
	roundTrip(rc, smptest.Cmd(rk, "k", rid, codec.CmdKEY, sk.PublicSPKI(), nil), codec.CmdOK)
	roundTrip(sc, smptest.Cmd(sk, "s", sid, codec.CmdSEND, nil, []byte("hello")), codec.CmdOK)
	if msg, err := rc.Next(ctx); err != nil || msg.Cmd != codec.CmdMSG { // pushed: NEW subscribed rc
		t.Fatalf("push: %v, %v", msg, err)
	}

	mid := r.scrape(t)
	if q, m, b := mid.Value(t, "smp_queues"), mid.Value(t, "smp_messages_stored"), mid.Value(t, "smp_message_bytes_stored"); q != 1 || m != 1 || b != 5 {
		t.Fatalf("with one message stored: %v queues, %v messages, %v bytes; want 1, 1, 5", q, m, b)
	}

	roundTrip(rc, smptest.Cmd(rk, "a", rid, codec.CmdACK, nil, nil), codec.CmdOK)
	if resp := roundTrip(sc, smptest.Cmd(stranger, "s", sid, codec.CmdSEND, nil, []byte("x")), codec.CmdERR); resp.Err != codec.ErrAuth {
		t.Fatalf("SEND signed by a stranger: ERR %v, want AUTH", resp.Err)
	}
	roundTrip(rc, smptest.Cmd(rk, "sub", rid, codec.CmdSUB, nil, nil), codec.CmdOK)
	roundTrip(sc, smptest.Ping("p"), codec.CmdPONG)
	roundTrip(sc, []byte("\r\nc\r\n\r\nHELLO\r\n"), codec.CmdERR)

	// A client hello that does not open: the server closes the connection.
	var d net.Dialer
	bad, err := d.DialContext(ctx, "tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	_, helloRaw, err := smptest.ReadServerHello(ctx, bad)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bad.Write(append([]byte{0, 16}, make([]byte, 16)...)); err != nil {
		t.Fatal(err)
	}
	if err := smptest.ExpectClosed(ctx, bad); err != nil {
		t.Fatal(err)
	}

	after := r.scrape(t)
	delta := func(name string, labels ...string) float64 {
		t.Helper()
		return after.Value(t, name, labels...) - before.Value(t, name, labels...)
	}
	for _, tc := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"smp_commands_total", []string{"command", "NEW", "result", "ok"}, 1},
		{"smp_commands_total", []string{"command", "KEY", "result", "ok"}, 1},
		{"smp_commands_total", []string{"command", "SEND", "result", "ok"}, 1},
		{"smp_commands_total", []string{"command", "SEND", "result", "auth"}, 1},
		{"smp_commands_total", []string{"command", "ACK", "result", "ok"}, 1},
		{"smp_commands_total", []string{"command", "SUB", "result", "ok"}, 1},
		{"smp_commands_total", []string{"command", "PING", "result", "ok"}, 1},
		{"smp_commands_total", []string{"command", "other", "result", "unknown"}, 1},
		{"smp_commands_total", []string{"command", "DEL", "result", "ok"}, 0},
		{"smp_handshakes_total", []string{"kem", "x25519", "outcome", "ok"}, 2},
		{"smp_handshakes_total", []string{"kem", "x25519", "outcome", "bad_hello"}, 1},
		{"smp_handshakes_total", []string{"kem", "x25519", "outcome", "timeout"}, 0},
		{"smp_connections_accepted_total", nil, 3},
		{"smp_connections_rejected_total", []string{"reason", "max_conns"}, 0},
		{"smp_queues", nil, 1},
		{"smp_messages_stored", nil, 0},
		{"smp_message_bytes_stored", nil, 0},
		{"smp_messages_expired_total", nil, 0},
		{"smp_blocks_total", []string{"direction", "in"}, float64(sends)},
		{"smp_blocks_total", []string{"direction", "out"}, float64(rc.BlocksReceived() + sc.BlocksReceived())},
		{"smp_bytes_total", []string{"direction", "out"}, float64(rc.BlocksReceived()+sc.BlocksReceived())*bs + 3*float64(len(helloRaw))},
		{"smp_wal_compactions_total", nil, 0},
	} {
		if got := delta(tc.name, tc.labels...); got != tc.want {
			t.Errorf("%s%v went up by %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
	// Bytes in: the blocks and two client hellos (sealed, so longer than their 94-byte plaintext).
	if in := delta("smp_bytes_total", "direction", "in") - float64(sends)*bs; in <= 2*94 || in > 2*1024 {
		t.Errorf("bytes in beyond the blocks: %v, want two client hellos", in)
	}
	// gnet runs OnClose before it closes the socket: the bad connection is
	// no longer counted once its client has seen the close.
	if open := after.Value(t, "smp_connections_open"); open != 2 {
		t.Errorf("smp_connections_open = %v, want the 2 live connections", open)
	}
	if d := after.HistCount(t, "smp_delivery_latency_seconds") - before.HistCount(t, "smp_delivery_latency_seconds"); d != 1 {
		t.Errorf("delivery latency: %d observations, want 1 (the pushed message)", d)
	}
	if m := after.Metric("smp_delivery_latency_seconds"); m.Histogram.GetSampleSum() <= 0 || m.Histogram.GetSampleSum() > hangGuardIn.Seconds() {
		t.Errorf("delivery latency sum %vs: want a positive time within the test", m.Histogram.GetSampleSum())
	}
	// Four changes were logged (NEW, KEY, SEND, ACK), each answered only once
	// durable: so there were groups, fsyncs and bytes written.
	if d := after.HistCount(t, "smp_wal_batch_records") - before.HistCount(t, "smp_wal_batch_records"); d < 1 {
		t.Errorf("%d log groups observed, want at least 1", d)
	}
	if d := after.HistCount(t, "smp_wal_fsync_seconds") - before.HistCount(t, "smp_wal_fsync_seconds"); d < 1 {
		t.Errorf("%d log fsyncs observed, want at least 1", d)
	}
	if d := delta("smp_wal_bytes_written_total"); d <= 0 {
		t.Errorf("smp_wal_bytes_written_total went up by %v, want more", d)
	}

	checkPrivacy(t, after, rid, sid)
}

// TestMetricsLimits: a connection refused at MaxConns, one closed by the
// handshake timeout, one that leaves before its hello, one closed by the idle
// sweep and one that floods are each counted once, under their own label, by
// the time the client sees the server close it.
func TestMetricsLimits(t *testing.T) {
	t.Parallel()
	r := startRelay(t, false, func(o *transport.ServerOptions) {
		o.HandshakeTimeout = 500 * time.Millisecond
		// The idle timeout is long enough that the two connections held
		// for MaxConns stay open while the third one is refused.
		o.Limits = transport.ConnLimits{MaxConns: 2, IdleTimeout: time.Second, BlocksPerSecond: 1, MaxInboundBlocks: 1}
	})
	ctx, cancel := context.WithTimeout(context.Background(), hangGuardIn)
	defer cancel()
	before := r.scrape(t)
	var d net.Dialer
	expectClosed := func(what string, nc net.Conn) {
		t.Helper()
		if err := smptest.ExpectClosed(ctx, nc); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}

	// Handshake timeout: a client that sends no hello.
	silent, err := d.DialContext(ctx, "tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	if _, _, err := smptest.ReadServerHello(ctx, silent); err != nil {
		t.Fatal(err)
	}
	expectClosed("a client without a hello", silent)

	// Closed: a client that ends its side before its hello. gnet runs
	// OnClose, which counts, before it closes the socket.
	quitter, err := d.DialContext(ctx, "tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer quitter.Close()
	if _, _, err := smptest.ReadServerHello(ctx, quitter); err != nil {
		t.Fatal(err)
	}
	if err := quitter.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	expectClosed("a client that left before its hello", quitter)

	// Idle: a client that completes the handshake and then sends nothing.
	idle, err := smptest.Dial(ctx, r.addr, r.key.Public().Fingerprint())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	if err := idle.ExpectClosed(ctx); err != nil {
		t.Fatalf("an idle client: %v", err)
	}

	// Flood: three blocks at once where one may wait (if they arrive in
	// pieces, the piece that brings the second one ends the connection).
	flood, err := smptest.Dial(ctx, r.addr, r.key.Public().Fingerprint())
	if err != nil {
		t.Fatal(err)
	}
	defer flood.Close()
	var blocks []byte
	for range 3 {
		blocks = append(blocks, flood.SealBlock(nil)...)
	}
	if err := flood.WriteRaw(blocks); err != nil {
		t.Fatal(err)
	}
	if err := flood.ExpectClosed(ctx); err != nil {
		t.Fatalf("a flooding client: %v", err)
	}

	// MaxConns: two open connections, then a third is refused.
	for range 2 {
		c, err := smptest.Dial(ctx, r.addr, r.key.Public().Fingerprint())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	extra, err := d.DialContext(ctx, "tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	expectClosed("a connection beyond MaxConns", extra)

	after := r.scrape(t)
	for _, tc := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"smp_handshakes_total", []string{"kem", "x25519", "outcome", "timeout"}, 1},
		{"smp_handshakes_total", []string{"kem", "x25519", "outcome", "closed"}, 1},
		{"smp_handshakes_total", []string{"kem", "x25519", "outcome", "bad_hello"}, 0},
		{"smp_handshakes_total", []string{"kem", "x25519", "outcome", "ok"}, 4},
		{"smp_connections_rejected_total", []string{"reason", "max_conns"}, 1},
		{"smp_connections_rejected_total", []string{"reason", "flood"}, 1},
		{"smp_connections_accepted_total", nil, 6},
	} {
		if got := after.Value(t, tc.name, tc.labels...) - before.Value(t, tc.name, tc.labels...); got != tc.want {
			t.Errorf("%s%v went up by %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
	// The idle sweep may also have closed the flooding client, or the two
	// held ones, before the scrape: at least the idle one, at most all four.
	if got := after.Value(t, "smp_connections_rejected_total", "reason", "idle") - before.Value(t, "smp_connections_rejected_total", "reason", "idle"); got < 1 || got > 4 {
		t.Errorf("idle closes went up by %v, want 1 to 4", got)
	}
}

// TestMetricsOutbound: a client that sends but never reads its replies is
// dropped once replies pile up beyond MaxOutbound, and counted as outbound
// before the drop reaches it.
func TestMetricsOutbound(t *testing.T) {
	t.Parallel()
	r := startRelay(t, false, func(o *transport.ServerOptions) {
		o.Limits = transport.ConnLimits{MaxOutbound: 1, BlocksPerSecond: 1 << 20}
	})
	ctx, cancel := context.WithTimeout(context.Background(), hangGuardIn)
	defer cancel()
	before := r.scrape(t)
	c, err := smptest.Dial(ctx, r.addr, r.key.Public().Fingerprint())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	deadline, _ := ctx.Deadline()
	if err := c.NetConn().SetWriteDeadline(deadline); err != nil {
		t.Fatal(err)
	}
	pings := make([][]byte, 600) // one block's worth: about one block of PONGs back
	for i := range pings {
		pings[i] = smptest.Ping("p")
	}
	// Once the kernel's buffers are full of unread PONGs (some 800 blocks
	// here) the relay's own outbound buffer grows past MaxOutbound and it
	// drops the client, which then fails to write. 4000 blocks (32 MiB) is
	// far more than the buffers hold.
	dropped := false
	for range 4000 {
		if err := c.Send(pings...); err != nil {
			dropped = true
			break
		}
	}
	if !dropped {
		t.Fatal("the relay kept a client that never reads")
	}
	after := r.scrape(t)
	if got := after.Value(t, "smp_connections_rejected_total", "reason", "outbound") - before.Value(t, "smp_connections_rejected_total", "reason", "outbound"); got != 1 {
		t.Fatalf("outbound drops went up by %v, want 1", got)
	}
}

// allowedLabels is every label value the relay's own metrics may carry, by
// label name; "version" and "key_type" are checked separately.
var allowedLabels = map[string][]string{
	"reason":    slices.Concat(transport.RejectLabels[:], engine.QuotaLabels[:], engine.ExpiredQueueLabels[:]),
	"kem":       {"rsa", "x25519", "mlkem768x25519"},
	"outcome":   transport.HandshakeLabels[:],
	"command":   engine.CommandLabels[:],
	"result":    engine.ResultLabels[:],
	"direction": {"in", "out"},
}

// checkPrivacy fails the test if a label names a queue, an address or a port
// (SPEC §8): the relay's own labels come from fixed sets, and no label of any
// family (runtime and process ones included) holds a queue ID or 127.0.0.1.
func checkPrivacy(t *testing.T, s scrape, ids ...[]byte) {
	t.Helper()
	var forbidden []string
	for _, id := range ids {
		forbidden = append(forbidden, base64.StdEncoding.EncodeToString(id), base64.URLEncoding.EncodeToString(id),
			base64.RawStdEncoding.EncodeToString(id), hex.EncodeToString(id))
	}
	forbidden = append(forbidden, "127.0.0.1")
	for name, f := range s {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				v := l.GetValue()
				for _, bad := range forbidden {
					if strings.Contains(v, bad) {
						t.Errorf("%s label %s=%q holds client data %q", name, l.GetName(), v, bad)
					}
				}
				if !strings.HasPrefix(name, "smp_") {
					continue
				}
				switch l.GetName() {
				case "version":
					if v != buildVersion() {
						t.Errorf("%s version=%q, want %q", name, v, buildVersion())
					}
				case "key_type":
					if v != "x25519" {
						t.Errorf("%s key_type=%q, want x25519", name, v)
					}
				default:
					if allowed, ok := allowedLabels[l.GetName()]; !ok || !slices.Contains(allowed, v) {
						t.Errorf("%s has label %s=%q, outside the fixed label sets", name, l.GetName(), v)
					}
				}
			}
		}
	}
}

// TestMetricsMemoryStore: with no log there are no smp_wal_* metrics, and the
// rest are there from the first scrape (at zero), so rate() works at once.
func TestMetricsMemoryStore(t *testing.T) {
	t.Parallel()
	r := startRelay(t, false)
	s := r.scrape(t)
	for name := range s {
		if strings.HasPrefix(name, "smp_wal_") {
			t.Errorf("%s is exported with the memory store", name)
		}
	}
	for _, cmd := range engine.CommandLabels {
		for _, res := range engine.ResultLabels {
			if v := s.Value(t, "smp_commands_total", "command", cmd, "result", res); v != 0 {
				t.Errorf("smp_commands_total{%s,%s} = %v before any traffic", cmd, res, v)
			}
		}
	}
	if c := s.HistCount(t, "smp_delivery_latency_seconds"); c != 0 {
		t.Errorf("delivery latency has %d observations before any traffic", c)
	}
	checkPrivacy(t, s)
}

// TestMetricsCaps: the relay-wide caps in force are gauges (+Inf for no
// limit) that follow SetLimits, refusals are counted by the limit that
// refused them, and lost bodies and expired queues start at zero.
func TestMetricsCaps(t *testing.T) {
	t.Parallel()
	r := startRelay(t, false)
	s := r.scrape(t)
	if b, q := s.Value(t, "smp_limit_max_stored_bytes"), s.Value(t, "smp_limit_max_queues"); b != float64(engine.DefaultLimits.MaxStoredBytes) ||
		q != float64(engine.DefaultLimits.MaxQueues) {
		t.Fatalf("caps %v bytes, %v queues; want the defaults", b, q)
	}
	for _, l := range engine.ExpiredQueueLabels {
		if v := s.Value(t, "smp_queues_expired_total", "reason", l); v != 0 {
			t.Errorf("smp_queues_expired_total{%s} = %v before any expiry", l, v)
		}
	}
	if v := s.Value(t, "smp_messages_lost_total"); v != 0 {
		t.Errorf("smp_messages_lost_total = %v at start", v)
	}

	if err := r.e.SetLimits(engine.Limits{MaxQueues: 1, MaxStoredBytes: -1}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), hangGuardIn)
	defer cancel()
	c, err := smptest.Dial(ctx, r.addr, r.key.Public().Fingerprint())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rk, err := codec.GenerateSigner(codec.SigEd25519, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []codec.Cmd{codec.CmdIDS, codec.CmdERR, codec.CmdERR} {
		if err := c.Send(smptest.Cmd(nil, "n", nil, codec.CmdNEW, rk.PublicSPKI(), nil)); err != nil {
			t.Fatal(err)
		}
		if resp, err := c.Next(ctx); err != nil || resp.Cmd != want {
			t.Fatalf("NEW %d: %v, %v; want %v", i, resp, err, want)
		}
	}
	s = r.scrape(t)
	if b, q := s.Value(t, "smp_limit_max_stored_bytes"), s.Value(t, "smp_limit_max_queues"); !math.IsInf(b, 1) || q != 1 {
		t.Fatalf("caps after SetLimits: %v bytes, %v queues; want +Inf (no limit) and 1", b, q)
	}
	for _, l := range engine.QuotaLabels {
		want := 0.0
		if l == "max_queues" {
			want = 2
		}
		if v := s.Value(t, "smp_quota_refusals_total", "reason", l); v != want {
			t.Errorf("smp_quota_refusals_total{%s} = %v, want %v", l, v, want)
		}
	}
	if v := s.Value(t, "smp_commands_total", "command", "NEW", "result", "quota"); v != 2 {
		t.Errorf("NEW answered ERR QUOTA %v times, want 2", v)
	}
	checkPrivacy(t, s)
}

// TestHealthz: 200 "ok" while serving, 503 with a one-line reason once the
// drain begins, and nothing once the endpoint is stopped.
func TestHealthz(t *testing.T) {
	t.Parallel()
	r := startRelay(t, true)
	if status, body := r.get(t, "/healthz"); status != http.StatusOK || body != "ok\n" {
		t.Fatalf("/healthz while serving: %d %q, want 200 \"ok\\n\"", status, body)
	}
	r.draining.Store(true)
	status, body := r.get(t, "/healthz")
	if status != http.StatusServiceUnavailable || !strings.HasPrefix(body, "draining") || strings.Count(body, "\n") != 1 {
		t.Fatalf("/healthz while draining: %d %q, want 503 and one line naming the drain", status, body)
	}
	if status, _ := r.get(t, "/nothing"); status != http.StatusNotFound {
		t.Fatalf("GET /nothing: %d, want 404", status)
	}

	ctx, cancel := context.WithTimeout(context.Background(), hangGuardIn)
	defer cancel()
	if err := r.stop(ctx); err != nil {
		t.Fatalf("stop: %v", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.metrics+"/healthz", nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatal("the endpoint still answers after stop")
	}
}

// TestStartMetricsErrors: a bad address is an error that names it.
func TestStartMetricsErrors(t *testing.T) {
	t.Parallel()
	r := startRelay(t, false)
	src := metricsSource{Engine: r.e, Server: r.srv, KeyType: "x25519"}
	if _, _, err := startMetrics("127.0.0.1:notaport", src, slog.New(slog.DiscardHandler)); err == nil ||
		!strings.Contains(err.Error(), "127.0.0.1:notaport") {
		t.Fatalf("startMetrics on a bad address: %v, want an error naming it", err)
	}
	if _, _, err := startMetrics("127.0.0.1:0", metricsSource{}, slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("startMetrics with no engine succeeded")
	}
}
