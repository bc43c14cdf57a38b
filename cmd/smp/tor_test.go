package main

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/smprelay/smprelay/internal/smptest"
	"github.com/smprelay/smprelay/internal/socks5test"
)

// lookupTrace makes the smp process print every host name its resolver is
// asked for ("go package net: hostLookupOrder(NAME) = …" on standard error),
// whichever resolver would then answer.
const lookupTrace = "GODEBUG=netdns=go+2"

// lookups returns the names a process run with lookupTrace looked up.
func lookups(stderr string) []string {
	var names []string
	for line := range strings.SplitSeq(stderr, "\n") {
		if _, rest, ok := strings.Cut(line, "hostLookupOrder("); ok {
			name, _, _ := strings.Cut(rest, ")")
			names = append(names, name)
		}
	}
	return names
}

// TestTorProxy runs smp against a relay named by a made-up .onion host that
// only a SOCKS5 proxy started by the test maps to it, as Tor maps an onion
// service. Without a proxy smp refuses the relay and says to use --proxy,
// looking nothing up. With --proxy (or SMP_PROXY) Alice creates a queue,
// Bob connects to her invitation (which carries the onion host), she
// accepts, he sends and she receives: every connection reached the proxy as
// a DOMAINNAME request for the onion name, and no process looked up any
// name itself (the resolver trace shows none, and it does show the lookup
// of an ordinary relay name dialed directly).
func TestTorProxy(t *testing.T) {
	ctx := guard(t)
	srv := smptest.StartServer(t)
	const onion = "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz234567.onion:5223"
	p := socks5test.Start(t, map[string]string{onion: srv.Addr})
	r := relayAt(t, srv, onion)
	trace := []string{lookupTrace, "SMP_PROXY="}
	viaEnv := []string{lookupTrace, "SMP_PROXY=socks5://" + p.Addr}
	proxyFlag := "--proxy=socks5://" + p.Addr

	// The trace is not blind: an ordinary name dialed directly is looked up.
	_, errOut, code := r.smp(t, ctx, "", trace, "--state", "alice.json", "--timeout", "5s", "create",
		"--server", "relay.example.invalid:5223", "bob")
	if code != 1 || !strings.Contains(strings.Join(lookups(errOut), " "), "relay.example.invalid") {
		t.Fatalf("a direct dial of relay.example.invalid: exit %d, lookups %q", code, lookups(errOut))
	}

	_, errOut, code = r.smp(t, ctx, "", trace, "--state", "alice.json", "create", "bob")
	if code != 1 || !strings.Contains(errOut, "onion service") || !strings.Contains(errOut, "--proxy socks5://127.0.0.1:9050") {
		t.Fatalf("create on an onion relay without a proxy: exit %d: %s", code, errOut)
	}
	if names := lookups(errOut); len(names) != 0 {
		t.Fatalf("without a proxy, smp looked up %q", names)
	}
	if reqs := p.Requests(); len(reqs) != 0 {
		t.Fatalf("without a proxy, the proxy got %+v", reqs)
	}

	steps := []struct {
		env  []string
		args []string
	}{
		{trace, []string{proxyFlag, "--state", "alice.json", "create", "--kem", "x25519", "bob"}},
		{viaEnv, []string{"--state", "bob.json", "connect", "alice", "INVITATION"}},
		{trace, []string{proxyFlag, "--state", "alice.json", "accept", "bob"}},
		{viaEnv, []string{"--state", "bob.json", "send", "alice", "hello over tor"}},
		{viaEnv, []string{"--state", "alice.json", "receive", "bob"}},
	}
	var inv, out string
	for _, s := range steps {
		for i, a := range s.args {
			if a == "INVITATION" {
				s.args[i] = inv
			}
		}
		out, errOut, code = r.smp(t, ctx, "", s.env, s.args...)
		if code != 0 {
			t.Fatalf("smp %q: exit %d: %s", s.args, code, errOut)
		}
		if names := lookups(errOut); len(names) != 0 {
			t.Fatalf("smp %q through the proxy looked up %q", s.args, names)
		}
		if inv == "" {
			inv = strings.TrimSpace(out)
			if !strings.Contains(inv, "@"+onion+"/") {
				t.Fatalf("the invitation does not name the onion relay: %s", inv)
			}
		}
	}
	if !strings.Contains(out, "hello over tor") {
		t.Fatalf("receive printed %q", out)
	}
	reqs := p.Requests()
	if len(reqs) < len(steps) {
		t.Fatalf("the proxy got %d requests for %d commands: %+v", len(reqs), len(steps), reqs)
	}
	for _, q := range reqs {
		if q.ATYP != socks5test.ATYPDomain || q.Addr() != onion || !q.Mapped {
			t.Fatalf("proxy request %+v, want a DOMAINNAME request for %s", q, onion)
		}
	}
}

// TestProxyErrors: a malformed --proxy or SMP_PROXY is a usage error, and a
// proxy that is down is named as such.
func TestProxyErrors(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state.json")
	t.Setenv("SMP_PROXY", "")
	for _, args := range [][]string{{"--proxy", "http://127.0.0.1:8080"}, {"--proxy", "socks5://127.0.0.1"}} {
		_, errOut, code := smpRun(t, state, time.Minute, append(args, "list")...)
		if code != 2 || !strings.Contains(errOut, "--proxy") || !strings.Contains(errOut, "socks5://HOST:PORT") {
			t.Errorf("smp %q list: exit %d: %s", args, code, errOut)
		}
	}
	t.Setenv("SMP_PROXY", "tor")
	if _, errOut, code := smpRun(t, state, time.Minute, "list"); code != 2 || !strings.Contains(errOut, "SMP_PROXY") {
		t.Errorf("SMP_PROXY=tor: exit %d: %s", code, errOut)
	}
	t.Setenv("SMP_PROXY", "")

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := ln.Addr().String()
	ln.Close()
	_, errOut, code := smpRun(t, state, time.Minute, "--proxy", "socks5://"+down, "create",
		"--server", "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz234567.onion:5223",
		"--fingerprint", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "bob")
	if code != 1 || !strings.Contains(errOut, "cannot reach the SOCKS5 proxy "+down+" (connection refused); is Tor") {
		t.Fatalf("create through a proxy that is down: exit %d: %s", code, errOut)
	}
}
