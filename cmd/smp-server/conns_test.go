package main_test

// Connection exhaustion and restarts, against the real binary: no number of
// connections stops the relay, a stopped relay starts again at once on the
// same address, and two relays never share one.

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/internal/smptest"
)

// floodLimit is the open-file limit the flooded relays run under.
const floodLimit = 1024

// metricsBase waits for the "metrics on" line and returns the endpoint's URL.
func metricsBase(t *testing.T, ctx context.Context, s *smptest.Server) string {
	t.Helper()
	waitOutput(t, ctx, s, "smp-server: metrics on ", 1)
	for _, line := range strings.Split(s.Stdout(), "\n") {
		if addr, ok := strings.CutPrefix(line, "smp-server: metrics on "); ok {
			return "http://" + addr
		}
	}
	t.Fatal("no metrics line")
	return ""
}

// waitMetric waits until the relay's metric name (a counter or gauge with
// exactly labels) satisfies ok: what a client did reaches the relay's loops,
// and its counters, a little later.
func waitMetric(t *testing.T, ctx context.Context, base string, ok func(float64) bool, name string, labels ...string) {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		v := smptest.ScrapeMetrics(t, base+"/metrics").Value(t, name, labels...)
		if ok(v) {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s%v is still %v", name, labels, v)
		case <-tick.C:
		}
	}
}

// flood opens n connections to addr from 127.0.0.2 to 127.0.0.5 (four
// sources, as a host with several addresses would), all at once, and returns
// those that connected; it sends nothing on them.
func flood(t *testing.T, addr string, n int) []net.Conn {
	t.Helper()
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	const workers = 64
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := net.Dialer{Timeout: 5 * time.Second,
				LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+w%4))}}
			for i := w; i < n; i += workers {
				nc, err := d.Dial("tcp", addr)
				if err != nil {
					continue // a full backlog drops the SYN: the flood goes on
				}
				mu.Lock()
				conns = append(conns, nc)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return conns
}

// TestDescriptorExhaustion floods a relay limited to 1,024 open files with
// three times as many connections from four source addresses. The relay
// refuses what it cannot hold (at max-conns, or at the open-file limit when
// max-conns is set above it), keeps serving its open connections, stays up,
// and serves a new client once the flood is gone.
func TestDescriptorExhaustion(t *testing.T) {
	for _, tc := range []struct {
		name   string
		args   []string
		reason string // the rejection reason the flood must have been counted under
	}{
		{"automatic max-conns", nil, "max_conns"},
		{"max-conns above the open-file limit", []string{"--max-conns", "100000"}, "fd_limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			// No per-source limits: the flood must reach the relay-wide ones.
			args := append([]string{"--key-type", "x25519", "--store", "memory", "--metrics-listen", "127.0.0.1:0",
				"--max-conns-per-source", "0", "--handshakes-per-source", "0"}, tc.args...)
			srv := smptest.StartServerWith(t, smptest.Launch{Args: args, NoFile: floodLimit})
			base := metricsBase(t, ctx, srv)
			by := newBystander(t, ctx, srv)

			conns := flood(t, srv.Addr, 3*floodLimit)
			select {
			case <-srv.Exited():
				t.Fatalf("the relay exited under the flood; stderr:\n%s", srv.Stderr())
			default:
			}
			by.check(t, ctx) // its connections were open all along

			// The relay works through its backlog after the dials returned.
			waitMetric(t, ctx, base, func(v float64) bool { return v > 0 },
				"smp_connections_rejected_total", "reason", tc.reason)
			if tc.reason == "fd_limit" && !strings.Contains(srv.Stderr(), "open-file limit is reached") {
				t.Errorf("no warning about the open-file limit; stderr:\n%s", srv.Stderr())
			}
			select {
			case <-srv.Exited():
				t.Fatalf("the relay exited under the flood; stderr:\n%s", srv.Stderr())
			default:
			}
			by.check(t, ctx)
			for _, nc := range conns {
				nc.Close()
			}
			// The bystander's two connections are left once the closes are seen.
			waitMetric(t, ctx, base, func(v float64) bool { return v <= 2 }, "smp_connections_open")

			// Connections the flood left in the kernel's backlog are still
			// being accepted (and, at the open-file limit, refused); a new
			// client gets through once they are gone.
			fresh := &bystander{r: dialEventually(t, ctx, srv), s: dialEventually(t, ctx, srv)}
			fresh.rk, fresh.sk, fresh.rid, fresh.sid = securedQueue(t, ctx, fresh.r, false)
			fresh.check(t, ctx)
			by.check(t, ctx)
		})
	}
}

// dialEventually dials until the relay completes a handshake, or ctx ends.
func dialEventually(t *testing.T, ctx context.Context, s *smptest.Server) *smptest.Conn {
	t.Helper()
	for {
		c, err := smptest.Dial(ctx, s.Addr, s.Fingerprint)
		if err == nil {
			t.Cleanup(func() { c.Close() })
			return c
		}
		if ctx.Err() != nil {
			t.Fatalf("no handshake completed: %v", err)
		}
	}
}

// connected opens a connection that completed its handshake and a PING.
func connected(t *testing.T, ctx context.Context, s *smptest.Server) *smptest.Conn {
	t.Helper()
	c := dial(t, ctx, s)
	if err := c.Send(smptest.Ping("p")); err != nil {
		t.Fatal(err)
	}
	if r, err := c.Next(ctx); err != nil || r.Cmd != codec.CmdPONG {
		t.Fatalf("PING: %v %v", r, err)
	}
	return c
}

// TestImmediateRestart stops a relay that has clients connected (with SIGTERM,
// and with kill -9) and starts it again at once on the same address: the
// sockets the old process left in TIME_WAIT must not stop the bind.
func TestImmediateRestart(t *testing.T) {
	for _, stop := range []string{"SIGTERM", "SIGKILL"} {
		t.Run(stop, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			dir := t.TempDir()
			args := []string{"--key-type", "x25519", "--drain-timeout", "5s"}
			first := smptest.StartServerIn(t, dir, args...)
			var clients []*smptest.Conn
			for range 8 {
				clients = append(clients, connected(t, ctx, first))
			}
			if stop == "SIGTERM" {
				if code := first.Stop(); code != 0 {
					t.Fatalf("SIGTERM: exit status %d; stderr:\n%s", code, first.Stderr())
				}
			} else {
				first.Kill()
			}
			for _, c := range clients {
				c.Close()
			}
			again := smptest.StartServerIn(t, dir, append(args, "--listen", first.Addr)...)
			if again.Addr != first.Addr {
				t.Fatalf("restarted on %s, want %s", again.Addr, first.Addr)
			}
			connected(t, ctx, again)
		})
	}
}

// TestPortNotShared: a second relay on a taken address exits 1 naming the
// address and the reason, before it creates its data directory.
func TestPortNotShared(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	first := smptest.StartServer(t, "--key-type", "x25519", "--store", "memory")
	dir := filepath.Join(t.TempDir(), "second")
	out, code := smptest.RunServer(t, "start", "--data", dir, "--listen", first.Addr, "--key-type", "x25519")
	if code != 1 || !strings.Contains(out, first.Addr) || !strings.Contains(out, "address already in use") ||
		strings.Contains(out, "smp-server: listening on") {
		t.Fatalf("second relay on %s: exit %d, want 1 naming the address and \"address already in use\":\n%s", first.Addr, code, out)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("the refused relay created its data directory %s (%v)", dir, err)
	}
	connected(t, ctx, first) // the first one still serves
}

// TestDataIsAFile: start, init and fingerprint say that --data names a file.
func TestDataIsAFile(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "data")
	if err := os.WriteFile(file, []byte("not a directory\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"start", "init", "fingerprint"} {
		args := []string{cmd, "--data", file}
		if cmd == "start" {
			args = append(args, "--listen", "127.0.0.1:0")
		}
		out, code := smptest.RunServer(t, args...)
		if code == 0 || !strings.Contains(out, file+" is a file, not a directory") {
			t.Errorf("%s with --data naming a file: exit %d, want an error saying it is a file:\n%s", cmd, code, out)
		}
	}
}

// TestFailedStartFreesAddress: a relay that cannot open its store after it
// bound its address exits 1 with the store's error, and the address is free
// for the next start.
func TestFailedStartFreesAddress(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "wal"), []byte("a file where the log directory goes\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := probe.Addr().String()
	probe.Close()
	out, code := smptest.RunServer(t, "start", "--data", dir, "--listen", addr, "--key-type", "x25519")
	if code != 1 || !strings.Contains(out, "opening the store") {
		t.Fatalf("start with a broken store: exit %d, want 1 with the store's error:\n%s", code, out)
	}
	srv := smptest.StartServer(t, "--key-type", "x25519", "--store", "memory", "--listen", addr)
	connected(t, ctx, srv)
}

// TestPerSourceLimit: one source cannot take every slot. With max-conns 400
// and 100 per source, an address that holds as many connections as it can
// (and keeps dialling) leaves room for a client on another address, which
// connects and completes a SEND/MSG cycle; the refusals are counted.
func TestPerSourceLimit(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv := smptest.StartServer(t, "--key-type", "x25519", "--store", "memory", "--metrics-listen", "127.0.0.1:0",
		"--max-conns", "400", "--max-conns-per-source", "100", "--handshakes-per-source", "0")
	base := metricsBase(t, ctx, srv)

	hog := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 7)}}
	var held []net.Conn
	defer func() {
		for _, nc := range held {
			nc.Close()
		}
	}()
	for range 400 {
		nc, err := hog.DialContext(ctx, "tcp", srv.Addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, nc)
	}
	waitMetric(t, ctx, base, func(v float64) bool { return v >= 300 }, "smp_connections_rejected_total", "reason", "per_source")
	if open := smptest.ScrapeMetrics(t, base+"/metrics").Value(t, "smp_connections_open"); open != 100 {
		t.Fatalf("the hog holds %v connections, want exactly 100", open)
	}

	// The honest client comes from another address, so its connections count
	// against its own source.
	by := newBystander(t, ctx, srv)
	by.check(t, ctx)
}

// TestNewQueuesPerSource: the NEW bucket belongs to the source, so a new
// connection from the same address finds it as empty as the old one left it,
// while another address has its own.
func TestNewQueuesPerSource(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	srv := smptest.StartServer(t, "--key-type", "x25519", "--store", "memory", "--new-queues-per-minute", "3")
	dialFrom := func(ip net.IP) *smptest.Conn {
		c, err := smptest.DialFrom(ctx, ip, srv.Addr, srv.Fingerprint)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	rk := newSigner(t, codec.SigEd25519)
	newQ := func(c *smptest.Conn, corr string) smptest.Response {
		send(t, c, smptest.Cmd(nil, corr, nil, codec.CmdNEW, rk.PublicSPKI(), nil))
		return next(t, ctx, c)
	}
	first := dialFrom(net.IPv4(127, 0, 0, 11))
	for i := range 3 {
		if r := newQ(first, fmt.Sprint("n", i)); r.Cmd != codec.CmdIDS {
			t.Fatalf("NEW %d of 3: %v, want IDS", i+1, r)
		}
	}
	if r := newQ(first, "n3"); r.Cmd != codec.CmdERR || r.Err != codec.ErrQuota {
		t.Fatalf("NEW 4 of 3: %v, want ERR QUOTA", r)
	}
	first.Close()
	again := dialFrom(net.IPv4(127, 0, 0, 11))
	if r := newQ(again, "n4"); r.Cmd != codec.CmdERR || r.Err != codec.ErrQuota {
		t.Fatalf("NEW after reconnecting from the same address: %v, want ERR QUOTA", r)
	}
	other := dialFrom(net.IPv4(127, 0, 0, 12))
	if r := newQ(other, "n5"); r.Cmd != codec.CmdIDS {
		t.Fatalf("NEW from another address: %v, want IDS", r)
	}
}

// TestHandshakesPerSource: a source that opens connections faster than its
// rate finds the extra ones closed at accept, counted as handshake_rate;
// another source is not affected.
func TestHandshakesPerSource(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	const rate = 5
	srv := smptest.StartServer(t, "--key-type", "x25519", "--store", "memory", "--metrics-listen", "127.0.0.1:0",
		"--handshakes-per-source", fmt.Sprint(rate))
	base := metricsBase(t, ctx, srv)
	start := time.Now()
	served := 0
	const tries = 40
	for range tries {
		if c, err := smptest.DialFrom(ctx, net.IPv4(127, 0, 0, 13), srv.Addr, srv.Fingerprint); err == nil {
			served++
			defer c.Close()
		}
	}
	// A burst of rate, then rate per second while the dials went on.
	if most := rate + int(float64(rate)*time.Since(start).Seconds()) + 1; served > most || served == tries {
		t.Fatalf("%d of %d connections served, want at most %d", served, tries, most)
	}
	if n := smptest.ScrapeMetrics(t, base+"/metrics").Value(t, "smp_connections_rejected_total", "reason", "handshake_rate"); int(n) != tries-served {
		t.Fatalf("handshake_rate counted %v refusals, want %d", n, tries-served)
	}
	c, err := smptest.DialFrom(ctx, net.IPv4(127, 0, 0, 14), srv.Addr, srv.Fingerprint)
	if err != nil {
		t.Fatalf("another source: %v", err)
	}
	c.Close()
}
