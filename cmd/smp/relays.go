package main

import (
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/smprelay/smprelay/client"
	"github.com/smprelay/smprelay/codec"
)

// Relay lists (issue 17). A relay is written as
//
//	relay       = %s"smp://" fingerprint "@" host [":" port]
//	fingerprint = <43 base64url characters, or 44 base64 ones>   ; 'smp-server fingerprint'
//
// (the authority of an invitation URI, SPEC §9). The configured list is
// SMP_RELAYS: relays separated by commas or white space. --relays on create
// and chat picks from it or replaces it:
//
//	--relays all          every configured relay (the default)
//	--relays N            the first N configured relays
//	--relays R1,R2,...    these relays (each as above, or the HOST:PORT of a
//	                      configured one)
//
// With no relay list (no SMP_RELAYS and no --relays), create and chat make a
// seed contact on --server as before: one queue each way.

// relayText writes srv in the relay form.
func relayText(srv client.Server) string {
	fp, err := base64.StdEncoding.DecodeString(srv.Fingerprint)
	if err != nil {
		return srv.Addr
	}
	return "smp://" + base64.RawURLEncoding.EncodeToString(fp) + "@" + srv.Addr
}

// parseRelay reads one relay in the relay form.
func parseRelay(s string) (client.Server, error) {
	rest, ok := strings.CutPrefix(s, "smp://")
	if !ok {
		return client.Server{}, fmt.Errorf("relay %q: want smp://FINGERPRINT@HOST:PORT", s)
	}
	fpText, addr, ok := strings.Cut(rest, "@")
	if !ok {
		return client.Server{}, fmt.Errorf("relay %q: no FINGERPRINT@ before the address", s)
	}
	fp, err := parseFingerprint(fpText)
	if err != nil {
		return client.Server{}, fmt.Errorf("relay %q: %w", s, err)
	}
	host, port, err := codec.ParseServer(addr)
	if err != nil {
		return client.Server{}, fmt.Errorf("relay %q: %w", s, err)
	}
	inv := codec.Invitation{Host: host, Port: port}
	return client.Server{Addr: inv.Addr(), Fingerprint: fp}, nil
}

// configuredRelays returns SMP_RELAYS's relays, in order, without repeats.
func configuredRelays() ([]client.Server, error) {
	var out []client.Server
	for _, f := range strings.FieldsFunc(os.Getenv("SMP_RELAYS"), func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' }) {
		srv, err := parseRelay(f)
		if err != nil {
			return nil, fmt.Errorf("SMP_RELAYS: %w", err)
		}
		out = appendRelay(out, srv)
	}
	return out, nil
}

func appendRelay(list []client.Server, srv client.Server) []client.Server {
	for _, s := range list {
		if s.Addr == srv.Addr {
			return list
		}
	}
	return append(list, srv)
}

// relaysFlag defines --relays; the returned function resolves it against
// the configured list: nil, nil when neither is given (a seed contact).
func relaysFlag(fs *flag.FlagSet) func() ([]client.Server, error) {
	v := fs.String("relays", "", "put the contact on relays: `all` configured ones ($SMP_RELAYS; the default when it is set), "+
		"the first N of them,\nor a comma-separated list of smp://FINGERPRINT@HOST:PORT (or HOST:PORT of configured ones)")
	return func() ([]client.Server, error) {
		conf, err := configuredRelays()
		if err != nil {
			return nil, err
		}
		return pickRelays(*v, conf)
	}
}

// pickRelays resolves a --relays value against the configured relays.
func pickRelays(v string, conf []client.Server) ([]client.Server, error) {
	switch {
	case v == "" || v == "all":
		if v == "all" && len(conf) == 0 {
			return nil, errors.New("--relays all: no relays configured: set SMP_RELAYS (smp://FINGERPRINT@HOST:PORT, separated by commas)")
		}
		return conf, nil
	}
	if n, err := strconv.Atoi(v); err == nil {
		switch {
		case n < 1:
			return nil, fmt.Errorf("--relays %d: want at least 1", n)
		case n > len(conf):
			return nil, fmt.Errorf("--relays %d: only %d relays are configured (SMP_RELAYS)", n, len(conf))
		}
		return conf[:n], nil
	}
	var out []client.Server
	for _, f := range strings.Split(v, ",") {
		f = strings.TrimSpace(f)
		srv, err := lookupRelay(f, conf)
		if err != nil {
			return nil, fmt.Errorf("--relays: %w", err)
		}
		out = appendRelay(out, srv)
	}
	return out, nil
}

// lookupRelay reads a relay in the relay form, or the HOST:PORT of one of
// list.
func lookupRelay(s string, list []client.Server) (client.Server, error) {
	if strings.HasPrefix(s, "smp://") {
		return parseRelay(s)
	}
	for _, srv := range list {
		if srv.Addr == s {
			return srv, nil
		}
	}
	return client.Server{}, fmt.Errorf("relay %q is not configured: give it as smp://FINGERPRINT@HOST:PORT", s)
}
