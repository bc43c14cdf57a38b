// Package socks5test is a SOCKS5 proxy (RFC 1928, CONNECT only) for tests,
// listening on 127.0.0.1: it maps the names it is given, such as a made-up
// .onion host, to local addresses, as Tor maps an onion service, and records
// every request, so a test can show that a client handed a name to the proxy
// rather than resolve it itself.
package socks5test

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
)

// Address types of a request (RFC 1928 §5).
const (
	ATYPIPv4   = 0x01
	ATYPDomain = 0x03
	ATYPIPv6   = 0x04
)

// Request is one CONNECT the proxy was asked for.
type Request struct {
	ATYP     byte   // ATYPIPv4, ATYPDomain or ATYPIPv6
	Host     string // the name as sent, or the address
	Port     uint16
	User     string // username/password authentication (RFC 1929), if the client chose it
	Password string
	Mapped   bool // the proxy knew the target and connected it
}

// Addr returns host:port of the request.
func (r Request) Addr() string { return net.JoinHostPort(r.Host, strconv.Itoa(int(r.Port))) }

// Proxy is a running SOCKS5 proxy.
type Proxy struct {
	// Addr is the proxy's 127.0.0.1:port.
	Addr string

	ln     net.Listener
	routes map[string]string

	mu     sync.Mutex
	reqs   []Request
	conns  map[net.Conn]bool
	closed bool
	wg     sync.WaitGroup
}

// Start starts a proxy that connects a request for a key of routes
// (host:port, the host as the client sends it) to its value, and refuses
// every other with "host unreachable", as Tor does for an unknown onion
// service. It stops when the test ends.
func Start(t testing.TB, routes map[string]string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{Addr: ln.Addr().String(), ln: ln, routes: routes, conns: map[net.Conn]bool{}}
	p.wg.Go(p.accept)
	t.Cleanup(p.Close)
	return p
}

// Requests returns the requests so far, in order.
func (p *Proxy) Requests() []Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Request(nil), p.reqs...)
}

// Cut closes every connection through the proxy, as a broken Tor circuit
// would; the proxy keeps taking new ones.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

// Close stops the proxy, closes every connection and waits for them.
func (p *Proxy) Close() {
	p.ln.Close()
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// track adds c to the connections Close closes, or closes it when Close
// has begun.
func (p *Proxy) track(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return
	}
	p.conns[c] = true
}

func (p *Proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.track(c)
		p.wg.Go(func() { p.serve(c) })
	}
}

var errProtocol = errors.New("socks5test: bad request")

// Replies (RFC 1928 §6).
const (
	repSucceeded       = 0x00
	repHostUnreachable = 0x04
	repCmdUnsupported  = 0x07
)

func (p *Proxy) serve(c net.Conn) {
	defer c.Close()
	var req Request
	if err := greet(c, &req); err != nil {
		return
	}
	var hdr [4]byte // VER CMD RSV ATYP
	if _, err := io.ReadFull(c, hdr[:]); err != nil || hdr[0] != 5 {
		return
	}
	req.ATYP = hdr[3]
	switch req.ATYP {
	case ATYPIPv4, ATYPIPv6:
		ip := make([]byte, 4)
		if req.ATYP == ATYPIPv6 {
			ip = make([]byte, 16)
		}
		if _, err := io.ReadFull(c, ip); err != nil {
			return
		}
		req.Host = net.IP(ip).String()
	case ATYPDomain:
		var n [1]byte
		if _, err := io.ReadFull(c, n[:]); err != nil {
			return
		}
		name := make([]byte, n[0])
		if _, err := io.ReadFull(c, name); err != nil {
			return
		}
		req.Host = string(name)
	default:
		return
	}
	var port [2]byte
	if _, err := io.ReadFull(c, port[:]); err != nil {
		return
	}
	req.Port = binary.BigEndian.Uint16(port[:])
	target, ok := p.routes[req.Addr()]
	var s net.Conn
	if ok && hdr[1] == 1 { // CONNECT
		var err error
		if s, err = net.Dial("tcp", target); err == nil {
			p.track(s)
			defer s.Close()
		}
	}
	req.Mapped = s != nil
	p.mu.Lock()
	p.reqs = append(p.reqs, req)
	p.mu.Unlock()
	rep := byte(repSucceeded)
	switch {
	case hdr[1] != 1:
		rep = repCmdUnsupported
	case s == nil:
		rep = repHostUnreachable
	}
	// The bound address is not meaningful here: 0.0.0.0:0.
	if _, err := c.Write([]byte{5, rep, 0, ATYPIPv4, 0, 0, 0, 0, 0, 0}); err != nil || s == nil {
		return
	}
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(s, c)
		s.Close()
		close(done)
	}()
	_, _ = io.Copy(c, s)
	c.Close()
	<-done
}

// greet negotiates the method: username/password when the client offers
// it (recording the credentials), else none.
func greet(c net.Conn, req *Request) error {
	var hdr [2]byte // VER NMETHODS
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		return err
	}
	if hdr[0] != 5 {
		return errProtocol
	}
	methods := make([]byte, hdr[1])
	if _, err := io.ReadFull(c, methods); err != nil {
		return err
	}
	method := byte(0xff)
	for _, m := range methods {
		if m == 2 || (m == 0 && method == 0xff) {
			method = m
		}
	}
	if _, err := c.Write([]byte{5, method}); err != nil {
		return err
	}
	switch method {
	case 0:
		return nil
	case 2:
		return userPass(c, req)
	}
	return errProtocol
}

// userPass reads the RFC 1929 subnegotiation and accepts any credentials.
func userPass(c net.Conn, req *Request) error {
	field := func() (string, error) {
		var n [1]byte
		if _, err := io.ReadFull(c, n[:]); err != nil {
			return "", err
		}
		b := make([]byte, n[0])
		_, err := io.ReadFull(c, b)
		return string(b), err
	}
	var ver [1]byte
	if _, err := io.ReadFull(c, ver[:]); err != nil || ver[0] != 1 {
		return errProtocol
	}
	var err error
	if req.User, err = field(); err != nil {
		return err
	}
	if req.Password, err = field(); err != nil {
		return err
	}
	_, err = c.Write([]byte{1, 0})
	return err
}
