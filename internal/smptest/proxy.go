package smptest

import (
	"bytes"
	"context"
	"net"
	"sync"
	"testing"
)

// Proxy forwards TCP connections from a listener on 127.0.0.1 to a target
// address, so that a test can stand between a client and the server: Cut
// severs every connection in progress, Hold stops bytes from the server
// reaching the client until Release, SetTarget points new connections
// elsewhere (a restarted server), and Recorded returns every byte that passed.
// Its methods are safe for concurrent use. It closes when the test ends.
type Proxy struct {
	Addr string // host:port clients dial

	ln net.Listener

	mu       sync.Mutex
	target   string
	pairs    map[*proxyPair]struct{}
	open     chan struct{} // closed while not held
	c2s, s2c bytes.Buffer
	accepted int
	changed  chan struct{} // closed and replaced when accepted grows
	closed   bool
	wg       sync.WaitGroup
}

type proxyPair struct{ client, server net.Conn }

// StartProxy listens on 127.0.0.1:0 and forwards to target.
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{Addr: ln.Addr().String(), ln: ln, target: target, pairs: make(map[*proxyPair]struct{}),
		open: make(chan struct{}), changed: make(chan struct{})}
	close(p.open)
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		cc, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		target := p.target
		p.mu.Unlock()
		sc, err := net.Dial("tcp", target)
		if err != nil {
			cc.Close()
			continue
		}
		pr := &proxyPair{client: cc, server: sc}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			cc.Close()
			sc.Close()
			return
		}
		p.pairs[pr] = struct{}{}
		p.accepted++
		close(p.changed)
		p.changed = make(chan struct{})
		p.wg.Add(2)
		p.mu.Unlock()
		go p.pipe(pr, sc, cc, &p.s2c, true)
		go p.pipe(pr, cc, sc, &p.c2s, false)
	}
}

// pipe copies src to dst, recording into rec; the server → client direction
// waits while the proxy is held.
func (p *Proxy) pipe(pr *proxyPair, src, dst net.Conn, rec *bytes.Buffer, fromServer bool) {
	defer p.wg.Done()
	defer p.drop(pr)
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if fromServer {
				p.mu.Lock()
				open := p.open
				p.mu.Unlock()
				<-open
			}
			p.mu.Lock()
			rec.Write(buf[:n])
			p.mu.Unlock()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return // EOF, or the connection was cut
		}
	}
}

func (p *Proxy) drop(pr *proxyPair) {
	pr.client.Close()
	pr.server.Close()
	p.mu.Lock()
	delete(p.pairs, pr)
	p.mu.Unlock()
}

// Cut closes every connection in progress, both sides, as a network failure
// would. New connections are still accepted.
func (p *Proxy) Cut() {
	p.mu.Lock()
	pairs := make([]*proxyPair, 0, len(p.pairs))
	for pr := range p.pairs {
		pairs = append(pairs, pr)
	}
	p.mu.Unlock()
	for _, pr := range pairs {
		pr.client.Close()
		pr.server.Close()
	}
}

// Hold stops forwarding server bytes to clients (they wait in the proxy)
// until Release.
func (p *Proxy) Hold() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.open:
		p.open = make(chan struct{})
	default:
	}
}

// Release forwards what Hold kept back, and everything after it.
func (p *Proxy) Release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.open:
	default:
		close(p.open)
	}
}

// SetTarget sends connections accepted from now on to addr.
func (p *Proxy) SetTarget(addr string) {
	p.mu.Lock()
	p.target = addr
	p.mu.Unlock()
}

// Accepted returns how many connections were accepted and forwarded.
func (p *Proxy) Accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

// WaitAccepted waits until at least n connections were accepted, or ctx ends.
func (p *Proxy) WaitAccepted(ctx context.Context, n int) error {
	for {
		p.mu.Lock()
		got, ch := p.accepted, p.changed
		p.mu.Unlock()
		if got >= n {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Recorded returns copies of every byte that went client → server and
// server → client so far, over all connections.
func (p *Proxy) Recorded() (c2s, s2c []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return bytes.Clone(p.c2s.Bytes()), bytes.Clone(p.s2c.Bytes())
}

// Close stops listening, closes every connection and waits for the copiers.
func (p *Proxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.mu.Unlock()
	p.ln.Close()
	p.Release()
	p.Cut()
	p.wg.Wait()
}
