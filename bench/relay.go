package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/smprelay/smprelay/client"
	"github.com/smprelay/smprelay/codec"
)

// relayRun says what one relay measurement does.
type relayRun struct {
	series   string // e.g. signed-ed25519
	signed   bool   // KEY before the timed phase, SENDs signed by SK
	alg      codec.SigAlg
	pairs    int // sender connections; as many recipient connections
	queues   int // queues per pair
	window   int // messages per queue sent and not yet delivered (closed loop)
	body     int
	warmup   time.Duration
	duration time.Duration
	rate     float64 // > 0: paced (open loop) at this many messages/s in all
}

// RelayPoint is one relay measurement.
type RelayPoint struct {
	Series      string  `json:"series"`
	Pairs       int     `json:"pairs"`
	Connections int     `json:"connections"`
	Queues      int     `json:"queuesPerPair"`
	Window      int     `json:"window"`
	BodyBytes   int     `json:"bodyBytes"`
	ServerArgs  string  `json:"serverArgs"`
	Paced       bool    `json:"paced"`
	TargetRate  float64 `json:"targetRate,omitempty"`
	Seconds     float64 `json:"seconds"`
	Delivered   int64   `json:"delivered"`
	Throughput  float64 `json:"messagesPerSecond"`
	P50Ms       float64 `json:"latencyP50Ms"`
	P99Ms       float64 `json:"latencyP99Ms"`
	P999Ms      float64 `json:"latencyP999Ms"`
	MaxMs       float64 `json:"latencyMaxMs"`
	// CDF is the latency (ms) at each of cdfPercentiles, for the distribution chart.
	CDF             []float64 `json:"latencyCdfMs"`
	ServerCPUSec    float64   `json:"serverCpuSeconds"`
	ServerCPUPerMsg float64   `json:"serverCpuPerMessageUs"`
	ServerRSS       uint64    `json:"serverRssBytes"`
	// LoadGenCPUPerMsg is this process's CPU per delivered message: it shares
	// the cores with the server.
	LoadGenCPUPerMsg float64 `json:"loadGeneratorCpuPerMessageUs"`
	// ServerBound is the rate the server's CPU per message would allow with
	// every core to itself: cores ÷ server CPU per message.
	ServerBound float64 `json:"serverBoundPerSecond"`
	// OtherCores is the CPU other processes used during the measurement, in
	// cores: above about 0.1 the machine was shared and the figures skewed.
	OtherCores    float64 `json:"otherProcessesCores"`
	CryptoPerMsg  float64 `json:"cryptoPerMessageUs"`
	CPUOverCrypto float64 `json:"serverCpuOverCrypto"`
	// CPUOverCryptoBusy is the same against the crypto cost with every core
	// busy (CryptoCosts.AllCoresFactor).
	CPUOverCryptoBusy float64 `json:"serverCpuOverCryptoAllCoresBusy"`
	Limit             float64 `json:"limitPerSecond"`
	OverLimit         float64 `json:"throughputOverLimit"`
	Errors            int64   `json:"errors"`
	// ServerCores is how many cores the server was pinned to (--pin); 0 when
	// it shared every core with the load generator.
	ServerCores int `json:"serverCores,omitempty"`
	// PerServerCore is the throughput per server core (pinned runs only), and
	// CoreLimit the stdlib crypto limit of one core for the point's signed
	// cycle (1 s ÷ its one-core crypto cost); PerCoreOverLimit is the first
	// over the second.
	PerServerCore    float64 `json:"messagesPerSecondPerServerCore,omitempty"`
	CoreLimit        float64 `json:"cryptoLimitPerCore,omitempty"`
	PerCoreOverLimit float64 `json:"perServerCoreOverCryptoLimitPerCore,omitempty"`
	// NonCryptoPerMsg is the server's CPU per delivered message less the
	// one-core crypto cost of a message: what the relay spends on everything
	// but the cryptography (signed series, pinned runs only).
	NonCryptoPerMsg float64 `json:"nonCryptoServerCpuPerMessageUs,omitempty"`
}

var cdfPercentiles = []float64{1, 5, 10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.99, 100}

// benchQueue is one queue under load. free holds the slots whose SEND may go
// (their previous message was delivered and their previous SEND answered);
// sent[slot] is when the SEND of that slot was issued (or due, when paced), in
// ns since the Unix epoch; busy[slot] counts what the slot still waits for
// (the OK and the MSG), and whichever comes last frees it.
type benchQueue struct {
	rid, sid []byte
	sends    []*client.Prepared // one per slot; the slot number is in the body's first 4 bytes
	ack      *client.Prepared
	sent     []atomic.Int64
	busy     []atomic.Int32
	free     chan int
	acks     chan struct{}
	rc, sc   *client.Conn
}

// release notes that slot got n of the two things it waits for.
func (q *benchQueue) release(slot int, n int32) {
	if q.busy[slot].Add(-n) == 0 {
		q.free <- slot
	}
}

// recorder collects what one recipient connection's event goroutine sees.
type recorder struct {
	queues atomic.Pointer[map[string]*benchQueue] // published once set up
	mu     sync.Mutex
	lat    []int64 // ns, while recording
	errs   atomic.Int64
}

// dialer spreads connections over source addresses 127.0.0.2–127.0.0.254,
// so that no one address runs out of ephemeral ports (TIME_WAIT included).
type dialer struct{ n atomic.Uint32 }

func (d *dialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	i := d.n.Add(1)
	nd := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i%253))}}
	return nd.DialContext(ctx, network, addr)
}

// dialFrom dials from the source address src, port chosen by the kernel.
func (d *dialer) dialFrom(ctx context.Context, src, addr string) (net.Conn, error) {
	nd := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	return nd.DialContext(ctx, "tcp", addr)
}

func benchOptions(fp string, d *dialer, onEvent func(client.Event)) client.Options {
	return client.Options{Fingerprint: fp, PingInterval: -1, NoReconnect: true, OnEvent: onEvent,
		Timeout: 2 * time.Minute, DialContext: d.dial}
}

// runRelay sets up r.pairs sender and recipient connections with r.queues
// queues each, runs SEND → MSG → ACK for warmup + duration, and measures the
// duration part.
func runRelay(ctx context.Context, srv *server, r relayRun, p *progress) (RelayPoint, error) {
	pt := RelayPoint{Series: r.series, Pairs: r.pairs, Connections: 2 * r.pairs, Queues: r.queues, Window: r.window,
		BodyBytes: r.body, Paced: r.rate > 0, TargetRate: r.rate}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ld := &relayLoad{r: r, srv: srv, slots: r.window, recs: make([]*recorder, r.pairs)}
	if r.rate > 0 {
		ld.slots = 32 // paced: room for a backlog, which then shows as latency
	}
	defer ld.closeConns()
	if err := ld.setup(ctx); err != nil {
		return pt, err
	}
	start := time.Now()
	ld.startLoad(ctx, start)
	stop := make(chan struct{})
	go p.tick(stop, func() (float64, string) { return ld.progress(start) })
	sleepCtx(ctx, r.warmup)
	w, err := ld.measure(ctx)
	close(stop)
	cancel()
	ld.wg.Wait()
	ld.sends.Wait()
	if err != nil {
		return pt, err
	}
	ld.fill(&pt, w)
	return pt, nil
}

// relayLoad is the load of one relay measurement: its connections and
// queues, the goroutines that send and acknowledge, and what they count.
type relayLoad struct {
	r     relayRun
	srv   *server
	slots int // messages per queue in flight at once
	d     dialer

	connMu sync.Mutex
	conns  []*client.Conn // closed by closeConns
	recs   []*recorder    // one per recipient connection
	allMu  sync.Mutex
	all    []*benchQueue

	recording atomic.Bool  // set during the measured part
	delivered atomic.Int64 // messages delivered while recording
	cmdErrs   atomic.Int64 // SENDs and ACKs that failed
	wg, sends sync.WaitGroup
}

// closeConns closes every connection setup opened.
func (ld *relayLoad) closeConns() {
	for _, c := range ld.conns {
		c.Close()
	}
}

// setup dials the pairs at once, each with its queues, and returns once
// every pair is ready or one failed.
func (ld *relayLoad) setup(ctx context.Context) error {
	template := make([]byte, ld.r.body)
	_, _ = rand.Read(template)
	var rsaRK, rsaSK *codec.Signer
	if ld.r.alg == codec.SigRSA {
		// One RSA key pair for every queue: generating hundreds would take
		// minutes and the server parses each queue's key all the same.
		var err error
		if rsaRK, err = codec.GenerateSigner(codec.SigRSA, 2048); err != nil {
			return err
		}
		if rsaSK, err = codec.GenerateSigner(codec.SigRSA, 2048); err != nil {
			return err
		}
	}
	errc := make(chan error, ld.r.pairs)
	for i := range ld.r.pairs {
		go func() { errc <- ld.setupPair(ctx, i, template, rsaRK, rsaSK) }()
	}
	var err error
	for range ld.r.pairs {
		err = errors.Join(err, <-errc)
	}
	if err != nil {
		return fmt.Errorf("setting up %d pairs: %w", ld.r.pairs, err)
	}
	return nil
}

// setupPair dials pair i's recipient and sender connections and creates its
// queues; rsaRK and rsaSK are the RSA keys every queue shares (RSA runs).
func (ld *relayLoad) setupPair(ctx context.Context, i int, template []byte, rsaRK, rsaSK *codec.Signer) error {
	rec := &recorder{}
	ld.recs[i] = rec
	rc, err := client.Dial(ctx, ld.srv.Addr, benchOptions(ld.srv.Fingerprint, &ld.d, ld.onEvent(rec)))
	if err != nil {
		return err
	}
	sc, err := client.Dial(ctx, ld.srv.Addr, benchOptions(ld.srv.Fingerprint, &ld.d, nil))
	if err != nil {
		rc.Close()
		return err
	}
	ld.connMu.Lock()
	ld.conns = append(ld.conns, rc, sc)
	ld.connMu.Unlock()
	qs := make(map[string]*benchQueue, ld.r.queues)
	for range ld.r.queues {
		rk, sk := rsaRK, rsaSK
		if ld.r.alg != codec.SigRSA {
			rk, _ = codec.GenerateSigner(codec.SigEd25519, 0)
			sk, _ = codec.GenerateSigner(codec.SigEd25519, 0)
		}
		q, err := ld.newQueue(ctx, rc, sc, rk, sk, template)
		if err != nil {
			return err
		}
		qs[string(q.rid)] = q
		ld.allMu.Lock()
		ld.all = append(ld.all, q)
		ld.allMu.Unlock()
	}
	rec.queues.Store(&qs)
	return nil
}

// newQueue creates a queue on rc (secured with sk when the run is signed)
// and prepares its SENDs on sc, one per slot, and its ACK.
func (ld *relayLoad) newQueue(ctx context.Context, rc, sc *client.Conn, rk, sk *codec.Signer, template []byte) (*benchQueue, error) {
	ids, err := rc.NewQueue(ctx, rk)
	if err != nil {
		return nil, err
	}
	if ld.r.signed {
		if err := rc.Secure(ctx, ids.RID, rk, sk.PublicSPKI()); err != nil {
			return nil, err
		}
	} else {
		sk = nil
	}
	slots := ld.slots
	q := &benchQueue{rid: ids.RID, sid: ids.SID, sent: make([]atomic.Int64, slots), busy: make([]atomic.Int32, slots),
		free: make(chan int, slots), acks: make(chan struct{}, slots+1), rc: rc, sc: sc}
	for s := range slots {
		body := slices.Clone(template)
		binary.BigEndian.PutUint32(body, uint32(s))
		ps, err := sc.PrepareSend(ids.SID, sk, body)
		if err != nil {
			return nil, err
		}
		q.sends = append(q.sends, ps)
		q.free <- s
	}
	if q.ack, err = rc.PrepareAck(ids.RID, rk); err != nil {
		return nil, err
	}
	return q, nil
}

// onEvent is the event handler of rec's recipient connection: it records a
// delivered message's latency while recording, frees its slot and has it
// acknowledged; anything unexpected counts as an error.
func (ld *relayLoad) onEvent(rec *recorder) func(client.Event) {
	return func(e client.Event) {
		switch e.Kind {
		case client.EventMessage:
		case client.EventDisconnected:
			rec.errs.Add(1)
			return
		default:
			return
		}
		now := time.Now().UnixNano()
		qs := rec.queues.Load()
		if qs == nil || len(e.Message.Body) < 4 {
			rec.errs.Add(1)
			return
		}
		q := (*qs)[string(e.RID)]
		slot := int(binary.BigEndian.Uint32(e.Message.Body))
		if q == nil || slot >= len(q.sent) {
			rec.errs.Add(1)
			return
		}
		if ld.recording.Load() {
			rec.mu.Lock()
			rec.lat = append(rec.lat, now-q.sent[slot].Load())
			rec.mu.Unlock()
			ld.delivered.Add(1)
		}
		q.release(slot, 1)
		q.acks <- struct{}{}
	}
}

// startLoad starts a sender and an acknowledger per queue; they run until
// ctx ends. Paced senders start spread over one interval from start.
func (ld *relayLoad) startLoad(ctx context.Context, start time.Time) {
	interval := time.Duration(0)
	if ld.r.rate > 0 {
		interval = time.Duration(float64(len(ld.all)) / ld.r.rate * 1e9)
	}
	for qi, q := range ld.all {
		ld.wg.Add(2)
		go func() {
			defer ld.wg.Done()
			ld.send(ctx, q, interval, start.Add(time.Duration(int64(interval)*int64(qi)/int64(len(ld.all)))))
		}()
		go func() {
			defer ld.wg.Done()
			ld.acknowledge(ctx, q)
		}()
	}
}

// send sends q's messages as their slots free up, or, paced (interval > 0),
// one each interval from next, until ctx ends.
func (ld *relayLoad) send(ctx context.Context, q *benchQueue, interval time.Duration, next time.Time) {
	for {
		var slot int
		select {
		case slot = <-q.free:
		case <-ctx.Done():
			return
		}
		t0 := time.Now()
		if interval > 0 {
			if w := time.Until(next); w > 0 {
				time.Sleep(w)
			}
			t0 = next // latency counts from when the message was due: no coordinated omission
			next = next.Add(interval)
		}
		q.sent[slot].Store(t0.UnixNano())
		q.busy[slot].Store(2)
		// The SEND's answer is waited for on its own goroutine, so the
		// next message goes when it is due (paced) or its slot is free,
		// not after this one's OK: with --fsync always an OK waits for
		// the disk, and waiting for it would cap each queue at one
		// message per fsync.
		ld.sends.Add(1)
		go func() {
			defer ld.sends.Done()
			if _, err := q.sc.Do(ctx, q.sends[slot]); err != nil {
				if ctx.Err() != nil {
					return
				}
				ld.cmdErrs.Add(1)
				q.release(slot, 2) // nothing stored: no MSG will come
				return
			}
			q.release(slot, 1)
		}()
	}
}

// acknowledge ACKs q's messages as they are delivered, until ctx ends.
func (ld *relayLoad) acknowledge(ctx context.Context, q *benchQueue) {
	for {
		select {
		case <-q.acks:
		case <-ctx.Done():
			return
		}
		if _, err := q.rc.Do(ctx, q.ack); err != nil && ctx.Err() == nil {
			ld.cmdErrs.Add(1)
		}
	}
}

// progress is the progress line's figures: the time since start and, while
// recording, the throughput so far.
func (ld *relayLoad) progress(start time.Time) (float64, string) {
	el := time.Since(start)
	note := ""
	if ld.recording.Load() {
		note = fmt.Sprintf("%.0f msg/s", float64(ld.delivered.Load())/(el-ld.r.warmup).Seconds())
	}
	return el.Seconds(), note
}

// window is what the measured part of a run reads before and after it.
type window struct {
	u0, u1       usage         // the server's
	self0, self1 usage         // this process's
	busy0, busy1 time.Duration // every process's (machineBusy)
	delivered    int64
}

// measure records deliveries for the run's duration and reads the CPU
// figures around it.
func (ld *relayLoad) measure(ctx context.Context) (window, error) {
	var w window
	var err error
	if w.u0, err = ld.srv.usage(); err != nil {
		return w, err
	}
	w.self0, _ = procUsage(os.Getpid())
	w.busy0 = machineBusy()
	ld.recording.Store(true)
	sleepCtx(ctx, ld.r.duration)
	ld.recording.Store(false)
	w.self1, _ = procUsage(os.Getpid())
	w.busy1 = machineBusy()
	w.u1, err = ld.srv.usage()
	w.delivered = ld.delivered.Load()
	return w, err
}

// fill sets pt's measured figures from w and the latencies recorded.
func (ld *relayLoad) fill(pt *RelayPoint, w window) {
	var lat []int64
	for _, rec := range ld.recs {
		rec.mu.Lock()
		lat = append(lat, rec.lat...)
		rec.mu.Unlock()
		pt.Errors += rec.errs.Load()
	}
	pt.Errors += ld.cmdErrs.Load()
	n := w.delivered
	pt.Seconds = w.u1.At.Sub(w.u0.At).Seconds()
	pt.Delivered = n
	pt.Throughput = float64(n) / pt.Seconds
	pt.ServerCPUSec = (w.u1.CPU - w.u0.CPU).Seconds()
	if n > 0 {
		pt.ServerCPUPerMsg = pt.ServerCPUSec / float64(n) * 1e6
		pt.LoadGenCPUPerMsg = (w.self1.CPU - w.self0.CPU).Seconds() / float64(n) * 1e6
		if pt.ServerCPUPerMsg > 0 { // /proc counts 10 ms ticks: a few messages may read 0
			pt.ServerBound = float64(runtime.NumCPU()) * 1e6 / pt.ServerCPUPerMsg
		}
	}
	pt.ServerRSS = w.u1.RSS
	other := (w.busy1 - w.busy0) - (w.u1.CPU - w.u0.CPU) - (w.self1.CPU - w.self0.CPU)
	pt.OtherCores = max(0, other.Seconds()/pt.Seconds)
	slices.Sort(lat)
	pt.P50Ms, pt.P99Ms, pt.P999Ms = pctMs(lat, 50), pctMs(lat, 99), pctMs(lat, 99.9)
	pt.MaxMs = pctMs(lat, 100)
	for _, q := range cdfPercentiles {
		pt.CDF = append(pt.CDF, pctMs(lat, q))
	}
}

// pctMs returns the q-th percentile of sorted ns values, in ms.
func pctMs(sorted []int64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q / 100 * float64(len(sorted)))
	if i >= len(sorted) {
		i = len(sorted) - 1
	}
	return float64(sorted[i]) / 1e6
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// withCrypto fills the ratios of pt against the crypto cycle named.
func (pt *RelayPoint) withCrypto(cc *CryptoCosts, cycle string) {
	if cc == nil {
		return
	}
	cy := cc.cycle(cycle)
	if cy.NsPerOp == 0 {
		return
	}
	pt.CryptoPerMsg = cy.NsPerOp / 1e3
	pt.Limit = cy.LimitOps
	if pt.CryptoPerMsg > 0 {
		pt.CPUOverCrypto = pt.ServerCPUPerMsg / pt.CryptoPerMsg
		pt.CPUOverCryptoBusy = pt.ServerCPUPerMsg / (cy.NsAllCores / 1e3)
	}
	pt.OverLimit = pt.Throughput / pt.Limit
	// The server-only ratios: with its own cores, the server's throughput per
	// core set against what one core's crypto allows.
	if pt.ServerCores > 0 && strings.HasPrefix(cycle, "signed-") && pt.CryptoPerMsg > 0 {
		pt.PerServerCore = pt.Throughput / float64(pt.ServerCores)
		pt.CoreLimit = 1e6 / pt.CryptoPerMsg
		pt.PerCoreOverLimit = pt.PerServerCore / pt.CoreLimit
		pt.NonCryptoPerMsg = pt.ServerCPUPerMsg - pt.CryptoPerMsg
	}
}
