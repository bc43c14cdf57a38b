package client

import (
	"context"
	"errors"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/smprelay/smprelay/internal/smptest"
	"github.com/smprelay/smprelay/internal/socks5test"
)

// onionHost is a made-up onion service name of the v3 form: only the test's
// proxy maps it.
const onionHost = "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz234567.onion"

// netRecorder is a DialContext that records every address it is asked to
// dial and every DNS query its resolver makes (none is answered), so a test
// can show what this process looked up itself.
type netRecorder struct {
	mu      sync.Mutex
	dials   []string
	lookups []string
	d       net.Dialer
}

func newNetRecorder() *netRecorder {
	r := &netRecorder{}
	r.d.Resolver = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, server string) (net.Conn, error) {
		r.mu.Lock()
		r.lookups = append(r.lookups, network+" "+server)
		r.mu.Unlock()
		return nil, errors.New("netRecorder: no DNS in this test")
	}}
	return r
}

func (r *netRecorder) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	r.mu.Lock()
	r.dials = append(r.dials, addr)
	r.mu.Unlock()
	return r.d.DialContext(ctx, network, addr)
}

func (r *netRecorder) seen() (dials, lookups []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.dials...), append([]string(nil), r.lookups...)
}

// TestProxyDial: with Options.Proxy, a relay named by an onion host (and by
// an ordinary name: with a proxy, every name goes through it) is reached
// through the SOCKS5 proxy, which gets the name unresolved (address type
// DOMAINNAME) with the credentials of the URL; this process dials the
// proxy's address alone and makes no DNS query. A reconnection after the
// circuit breaks takes the same path.
func TestProxyDial(t *testing.T) {
	// The recorder sees a lookup when one is made: dialing the name
	// directly makes one.
	blind := newNetRecorder()
	if _, err := blind.DialContext(guard(t), "tcp", "relay.example.invalid:5223"); err == nil {
		t.Fatal("relay.example.invalid resolved")
	}
	if _, lookups := blind.seen(); len(lookups) == 0 {
		t.Fatal("a direct dial of a name made no DNS query the recorder saw")
	}
	srv := smptest.StartServer(t)
	for _, host := range []string{onionHost, "relay.example.invalid"} {
		t.Run(host, func(t *testing.T) {
			ctx := guard(t)
			addr := host + ":5223"
			p := socks5test.Start(t, map[string]string{addr: srv.Addr})
			u, err := ParseProxy("socks5://alice:circuit-1@" + p.Addr)
			if err != nil {
				t.Fatal(err)
			}
			rec := newNetRecorder()
			opts := fastOptions(srv.Fingerprint)
			opts.Proxy, opts.DialContext = u, rec.DialContext
			c := dial(t, addr, opts)
			if err := c.Ping(ctx); err != nil {
				t.Fatal(err)
			}
			p.Cut()
			next(t, c, EventReconnected, EventDisconnected, EventReconnectFailed)
			if err := c.Ping(ctx); err != nil {
				t.Fatal(err)
			}

			dials, lookups := rec.seen()
			if len(lookups) != 0 {
				t.Errorf("DNS queries made locally: %q", lookups)
			}
			if len(dials) < 2 {
				t.Errorf("dialed %q, want the proxy at least twice (Dial and the reconnection)", dials)
			}
			for _, d := range dials {
				if d != p.Addr {
					t.Errorf("dialed %s locally, want only the proxy %s", d, p.Addr)
				}
			}
			reqs := p.Requests()
			mapped := 0
			for _, r := range reqs {
				if r.ATYP != socks5test.ATYPDomain || r.Addr() != addr || r.User != "alice" || r.Password != "circuit-1" {
					t.Errorf("proxy request %+v, want a DOMAINNAME request for %s with the URL's credentials", r, addr)
				}
				if r.Mapped {
					mapped++
				}
			}
			if mapped < 2 {
				t.Errorf("proxy requests %+v: want at least 2 connected (Dial and the reconnection)", reqs)
			}
		})
	}
}

// TestOnionNeedsProxy: without a proxy, an onion relay is refused with
// ErrOnionNeedsProxy before anything is dialed or looked up, in any spelling
// of the name; the dialer of reconnections refuses it too.
func TestOnionNeedsProxy(t *testing.T) {
	ctx := guard(t)
	rec := newNetRecorder()
	for _, host := range []string{onionHost, strings.ToUpper(onionHost), onionHost + ".", "x.y.OnIoN"} {
		addr := net.JoinHostPort(host, "5223")
		_, err := Dial(ctx, addr, Options{Fingerprint: "x", DialContext: rec.DialContext})
		if !errors.Is(err, ErrOnionNeedsProxy) || !strings.Contains(err.Error(), "proxy") {
			t.Errorf("Dial %s: %v, want ErrOnionNeedsProxy", addr, err)
		}
		d, err := dialer(nil, rec.DialContext)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d(ctx, "tcp", addr); !errors.Is(err, ErrOnionNeedsProxy) {
			t.Errorf("dialer %s: %v, want ErrOnionNeedsProxy", addr, err)
		}
	}
	if dials, lookups := rec.seen(); len(dials)+len(lookups) != 0 {
		t.Fatalf("dialed %q and looked up %q", dials, lookups)
	}
	for _, host := range []string{"onion.example", "example.onion.net", "127.0.0.1"} {
		if IsOnion(host) {
			t.Errorf("IsOnion(%q)", host)
		}
	}
}

// TestProxyRefused: a proxy that cannot reach the relay, and a proxy that
// cannot be reached, fail Dial with errors that say which.
func TestProxyRefused(t *testing.T) {
	ctx := guard(t)
	p := socks5test.Start(t, nil)
	u, err := ParseProxy("socks5://" + p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Dial(ctx, onionHost+":5223", Options{Fingerprint: "x", Proxy: u})
	if err == nil || errors.Is(err, ErrProxyUnreachable) || !strings.Contains(err.Error(), "SOCKS5 proxy "+p.Addr+" did not connect it") ||
		!strings.Contains(err.Error(), "host unreachable") {
		t.Fatalf("Dial through a proxy that refuses: %v", err)
	}
	if reqs := p.Requests(); len(reqs) != 1 || reqs[0].Mapped || reqs[0].Host != onionHost {
		t.Fatalf("proxy requests %+v", reqs)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	u, err = ParseProxy("socks5://" + closed)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Dial(ctx, onionHost+":5223", Options{Fingerprint: "x", Proxy: u})
	if !errors.Is(err, ErrProxyUnreachable) || !strings.Contains(err.Error(), closed) {
		t.Fatalf("Dial through a proxy that is down: %v", err)
	}
	t.Logf("%v", err)
}

func TestParseProxy(t *testing.T) {
	for _, good := range []string{"socks5://127.0.0.1:9050", "SOCKS5H://localhost:9050", "socks5://u:p@[::1]:1080", "socks5://u@127.0.0.1:9050/"} {
		if _, err := ParseProxy(good); err != nil {
			t.Errorf("ParseProxy(%q): %v", good, err)
		}
	}
	for _, bad := range []string{"", "127.0.0.1:9050", "http://127.0.0.1:8080", "socks4://127.0.0.1:9050", "socks5://127.0.0.1",
		"socks5://:9050", "socks5://127.0.0.1:9050/x", "socks5://127.0.0.1:9050?a=b", "socks5://:p@127.0.0.1:9050",
		"socks5://" + strings.Repeat("u", 256) + "@127.0.0.1:9050"} {
		if _, err := ParseProxy(bad); err == nil {
			t.Errorf("ParseProxy(%q) accepted", bad)
		}
	}
	// A proxy URL built by hand is checked by Dial.
	_, err := Dial(guard(t), "relay.example:5223", Options{Fingerprint: "x", Proxy: &url.URL{Scheme: "http", Host: "127.0.0.1:8080"}})
	if err == nil || !strings.Contains(err.Error(), "socks5://") {
		t.Fatalf("Dial with an http proxy: %v", err)
	}
}
