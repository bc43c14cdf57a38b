package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"

	"golang.org/x/net/proxy"

	"github.com/smprelay/smprelay/internal/errwrap"
)

// ErrOnionNeedsProxy reports a relay whose host is an onion service (a name
// ending in .onion, RFC 7686) dialed without Options.Proxy. Such a relay is
// reachable only through Tor, and looking its name up through ordinary DNS
// would tell the resolver, and anyone watching it, which service the user
// wants; Dial refuses before any lookup.
var ErrOnionNeedsProxy = errors.New("client: a .onion relay is reachable only through Tor: set a SOCKS5 proxy (Options.Proxy)")

// ErrProxyUnreachable reports a SOCKS5 proxy (Options.Proxy) that could not
// be connected to, as opposed to a proxy that could not reach the relay.
var ErrProxyUnreachable = errors.New("client: cannot reach the SOCKS5 proxy")

// ParseProxy parses a proxy URL for Options.Proxy:
// socks5://[USER[:PASSWORD]@]HOST:PORT, such as socks5://127.0.0.1:9050 for
// Tor. The scheme socks5h is accepted as a synonym: with either, the proxy
// resolves every relay name. The port is required.
func ParseProxy(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("client: proxy %q: %w", s, err)
	}
	if err := checkProxy(u); err != nil {
		return nil, err
	}
	return u, nil
}

// checkProxy checks what the SOCKS5 dialer needs of a proxy URL.
func checkProxy(u *url.URL) error {
	switch strings.ToLower(u.Scheme) {
	case "socks5", "socks5h":
	default:
		return fmt.Errorf("client: proxy %s: want socks5://HOST:PORT", u.Redacted())
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil || host == "" || port == "" {
		return fmt.Errorf("client: proxy %s: want socks5://HOST:PORT, with the port (Tor's is 9050)", u.Redacted())
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("client: proxy %s: nothing may follow HOST:PORT", u.Redacted())
	}
	if u.User != nil {
		pw, _ := u.User.Password()
		if n := len(u.User.Username()); n == 0 || n > 255 || len(pw) > 255 {
			return fmt.Errorf("client: proxy %s: the user name must have 1 to 255 bytes and the password at most 255 (RFC 1929)", u.Redacted())
		}
	}
	return nil
}

// IsOnion reports whether host (without a port) names an onion service: its
// last label is "onion" (RFC 7686), in any case, with or without a final dot.
func IsOnion(host string) bool {
	h := strings.TrimSuffix(host, ".")
	i := strings.LastIndexByte(h, '.')
	return strings.EqualFold(h[i+1:], "onion")
}

// dialFunc is a DialContext function as a proxy.Dialer and
// proxy.ContextDialer, for the SOCKS5 dialer to reach the proxy with.
type dialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

func (f dialFunc) Dial(network, addr string) (net.Conn, error) {
	return f(context.Background(), network, addr)
}

func (f dialFunc) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return f(ctx, network, addr)
}

// dialer returns the function that opens every connection of a Conn, first
// and reconnections alike. base reaches the network. With a proxy, base dials
// the proxy's address alone and the relay's address goes to the proxy as
// given, a name unresolved (SOCKS5 address type DOMAINNAME), so this process
// looks up no relay name. Without one, an onion host is refused before base
// sees it.
func dialer(proxyURL *url.URL, base dialFunc) (dialFunc, error) {
	if proxyURL == nil {
		return func(ctx context.Context, network, addr string) (net.Conn, error) {
			if host, _, err := net.SplitHostPort(addr); err == nil && IsOnion(host) {
				return nil, ErrOnionNeedsProxy
			}
			return base(ctx, network, addr)
		}, nil
	}
	if err := checkProxy(proxyURL); err != nil {
		return nil, err
	}
	var auth *proxy.Auth
	if proxyURL.User != nil {
		pw, _ := proxyURL.User.Password()
		auth = &proxy.Auth{User: proxyURL.User.Username(), Password: pw}
	}
	where := proxyURL.Host
	// Failures to reach the proxy are marked, to tell them from the
	// proxy's own answers.
	forward := dialFunc(func(ctx context.Context, network, addr string) (net.Conn, error) {
		nc, err := base(ctx, network, addr)
		if err != nil {
			return nil, errwrap.Wrap(fmt.Errorf("%w %s", ErrProxyUnreachable, where), err)
		}
		return nc, nil
	})
	d, err := proxy.SOCKS5("tcp", proxyURL.Host, auth, forward)
	if err != nil {
		return nil, fmt.Errorf("client: proxy %s: %w", proxyURL.Redacted(), err)
	}
	cd, ok := d.(proxy.ContextDialer)
	if !ok {
		return nil, fmt.Errorf("client: proxy %s: the SOCKS5 dialer takes no context", proxyURL.Redacted())
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		nc, err := cd.DialContext(ctx, network, addr)
		if err == nil {
			return nc, nil
		}
		// The SOCKS dialer wraps everything in a net.OpError whose text
		// repeats both addresses: keep what went wrong.
		var oe *net.OpError
		if errors.As(err, &oe) && oe.Err != nil {
			err = oe.Err
		}
		if errors.Is(err, ErrProxyUnreachable) {
			return nil, err
		}
		return nil, fmt.Errorf("the SOCKS5 proxy %s did not connect it: %w", where, err)
	}, nil
}
