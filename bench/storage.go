package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/smprelay/smprelay/client"
	"github.com/smprelay/smprelay/codec"
)

// The storage scenarios (issue 14, "Message bodies on disk"): the relay's
// memory against what it stores, and its restart time, for the store named
// by --storage-store. Neither is in the default suite (make bench-storage).
//
// storage-messages fills --storage-messages bodies of --storage-body bytes
// round-robin into --storage-msg-queues secured queues in --storage-steps
// steps, reads the relay's settled RSS after each, stops the relay
// (SIGTERM), restarts it on the same data directory, and then drains every
// queue (the cold read: with --store disk, bodies the restarted relay has
// only on disk).
// storage-queues creates --storage-queue-count empty queues in steps, then
// optionally --storage-queue-messages small messages over them (the README's
// large restart case), and restarts. Both time the restart against an empty
// relay's.

// storageQuota is the relay's --quota in the storage scenarios: the fill
// puts hundreds of messages in each queue, far past the default of 128.
const storageQuota = "1000000"

// storageArgs are the relay flags of the storage scenarios, after
// capacityArgs: the store under test, the quota the fill needs, and no
// per-connection block rate, so that the fill runs as fast as the relay
// stores (the per-source limits are lifted by capacityArgs).
func (s *suite) storageArgs() []string {
	args := []string{"--store", s.c.storageStore, "--quota", storageQuota, "--blocks-per-second", "1000000"}
	if s.c.storageMetrics {
		args = append(args, "--metrics-listen", "127.0.0.1:0")
	}
	return args
}

// StorageStep is one reading of a storage scenario, taken with the relay
// idle after a step of the fill or of the queue creation.
type StorageStep struct {
	Queues        int     `json:"queues"`                     // queues on the relay
	Messages      int     `json:"messages"`                   // messages stored
	StoredBytes   int64   `json:"storedBodyBytes"`            // bytes of the bodies stored
	RSS           uint64  `json:"serverRssBytes"`             // VmRSS, settled (settleRSS)
	RSSAnon       uint64  `json:"serverRssAnonBytes"`         // RssAnon of that reading: heap and other private memory
	RSSFile       uint64  `json:"serverRssFileBytes"`         // RssFile of that reading: mapped files (the binary, any mmap)
	HeapInuse     uint64  `json:"goHeapInuseBytes,omitempty"` // go_memstats_heap_inuse_bytes just after; 0 without metrics
	StepSeconds   float64 `json:"stepSeconds"`                // time the step's sending or creating took
	SettleSeconds float64 `json:"settleSeconds"`              // time the reading took to settle
}

// EmptyStart is the reference the restarts are set against: an empty
// relay's start, with the same store and flags.
type EmptyStart struct {
	FreshSeconds   float64   `json:"freshStartSeconds"`    // first start on an empty directory: creates the key and the store
	RestartSeconds []float64 `json:"restartSeconds"`       // each restart on that directory, nothing stored
	MedianSeconds  float64   `json:"medianRestartSeconds"` // the median restart: the reference
	RSS            uint64    `json:"rssBytes"`             // settled RSS after the last restart
}

// StorageRestart is a graceful stop and a start on the same data
// directory, timed as EmptyStart's are.
type StorageRestart struct {
	StopSeconds  float64 `json:"stopSeconds"`              // SIGTERM to the process's exit
	StartSeconds float64 `json:"startSeconds"`             // fork to the "listening on" line
	RSS          uint64  `json:"rssAfterRestartBytes"`     // settled RSS after the restart, before any client
	RSSAnon      uint64  `json:"rssAnonAfterRestartBytes"` // RssAnon of that reading
	// EmptySeconds is EmptyStart.MedianSeconds; Ratio is StartSeconds over
	// it, and LimitSeconds issue 14's bound: 3 × EmptySeconds + 0.5 s.
	EmptySeconds float64 `json:"emptyStartSeconds"`
	Ratio        float64 `json:"ratioToEmpty"`
	LimitSeconds float64 `json:"limitSeconds"`
}

// ColdRead is the drain after the restart: every queue subscribed and
// every message received and acknowledged.
type ColdRead struct {
	Queues      int     `json:"queues"`            // queues drained
	Connections int     `json:"connections"`       // recipient connections they were spread over
	Expected    int     `json:"expectedMessages"`  // messages stored before the restart
	Received    int64   `json:"messagesReceived"`  // SUB and ACK answers that carried a message
	Events      int64   `json:"messageEvents"`     // messages the connections' event handlers saw
	BadBodies   int64   `json:"badBodies"`         // messages whose body had not the length sent
	Seconds     float64 `json:"seconds"`           // first SUB to the last ACK's answer
	Rate        float64 `json:"messagesPerSecond"` // Received over Seconds
	ServerCPU   float64 `json:"serverCpuSeconds"`  // the relay's CPU during the drain
	// CacheHits and CacheMisses are the store's cache counters' increase
	// during the drain, read from the metrics endpoint; HitRate is hits
	// over both, nil ("n/a") when the relay exports no such counters.
	CacheHits   float64  `json:"cacheHits"`
	CacheMisses float64  `json:"cacheMisses"`
	HitRate     *float64 `json:"cacheHitRate"`
	CacheNote   string   `json:"cacheNote"`          // the counters read, or why there are none (HitRate nil)
	RSSAfter    uint64   `json:"rssAfterDrainBytes"` // settled RSS once every queue is empty
}

// Bound is one of issue 14's bounds and whether this run meets it.
type Bound struct {
	Bound    string `json:"bound"`    // the bound, as the issue states it
	Measured string `json:"measured"` // this run's figure, with what it was set against
	Meets    bool   `json:"meets"`    // a miss is reported, not a failure of the run
}

// StorageMessagesResult is the storage-messages scenario.
type StorageMessagesResult struct {
	Store       string        `json:"store"`             // --store of the relay
	ServerArgs  string        `json:"serverArgs"`        // every flag the relay got after start --data --listen
	Queues      int           `json:"queues"`            // secured queues the messages are spread over
	Messages    int           `json:"messages"`          // messages stored
	BodyBytes   int           `json:"bodyBytes"`         // body bytes of each
	Connections int           `json:"senderConnections"` // connections that fill, and that drain
	InFlight    int           `json:"sendsInFlight"`     // SENDs in flight over them
	BaseRSS     uint64        `json:"baseRssBytes"`      // settled RSS after the start, before any queue
	Steps       []StorageStep `json:"steps"`             // the first: the queues made, nothing stored
	// PerMessage is the least-squares slope of RSS over the stored messages,
	// over the steps with messages (the queues' step left out, so that a
	// cache filling in the first step does not count per message).
	PerMessage   float64 `json:"rssPerMessageBytes"`
	FillSeconds  float64 `json:"fillSeconds"`           // sending only, readings left out
	FillRate     float64 `json:"fillMessagesPerSecond"` // Messages over FillSeconds
	RSSAfterFill uint64  `json:"rssAfterFillBytes"`     // the last step's RSS
	// IndexPerMessage is RAM per stored message with no body in RAM: the
	// restarted relay's RSS less the fresh relay's (BaseRSS), over Messages.
	// The restart holds no cached body and returned replay's garbage, so this
	// is the index issue 14 bounds ("≤ 64 bytes beyond the cache"); the fill
	// slope above also counts the cache filling and the garbage of sends.
	IndexPerMessage float64         `json:"indexRamPerMessageBytes"`
	DataDirBytes    int64           `json:"dataDirBytes"`       // disk usage of the data directory after the stop
	Empty           *EmptyStart     `json:"emptyRelay"`         // the reference of the restart
	Restart         *StorageRestart `json:"restart,omitempty"`  // after the fill
	ColdRead        *ColdRead       `json:"coldRead,omitempty"` // after the restart
	Bounds          []Bound         `json:"bounds"`             // issue 14's, for this scenario
	Note            string          `json:"note"`               // how the figures were read
}

// StorageQueuesResult is the storage-queues scenario.
type StorageQueuesResult struct {
	Store       string        `json:"store"`            // --store of the relay
	ServerArgs  string        `json:"serverArgs"`       // every flag the relay got after start --data --listen
	Queues      int           `json:"queues"`           // queues made
	Secured     bool          `json:"secured"`          // each queue got a sender key (KEY) after NEW
	Connections int           `json:"connections"`      // connections of each step, and of the fill
	InFlight    int           `json:"commandsInFlight"` // commands in flight over them
	BaseRSS     uint64        `json:"baseRssBytes"`     // settled RSS after the start, before any queue
	Steps       []StorageStep `json:"steps"`            // the first: nothing made
	// PerQueue is the least-squares slope of RSS over the queues, over the
	// steps with queues.
	PerQueue float64 `json:"rssPerQueueBytes"`
	// IndexPerQueue is RAM per queue after the restart: its RSS less the
	// fresh relay's, over Queues; only without messages (else they share
	// it), 0 then. The restart returned replay's garbage, so this is the
	// queues' own memory; the creation's slope also counts the garbage of
	// NEW the GC had not returned.
	IndexPerQueue float64 `json:"indexRamPerQueueBytes,omitempty"`
	CreateSeconds float64 `json:"createSeconds"`   // creating only, readings left out
	CreateRate    float64 `json:"queuesPerSecond"` // Queues over CreateSeconds
	// The large restart case: Messages bodies of MessageBody bytes sent
	// round-robin over the queues after the last step, in steps of their own.
	Messages     int             `json:"messages"`                     // 0: none, the queues stay empty
	MessageBody  int             `json:"messageBodyBytes"`             // body bytes of each
	MessageSteps []StorageStep   `json:"messageSteps,omitempty"`       // the readings of that fill
	PerMessage   float64         `json:"rssPerMessageBytes,omitempty"` // least-squares slope over them
	FillSeconds  float64         `json:"fillSeconds,omitempty"`        // sending only
	DataDirBytes int64           `json:"dataDirBytes"`                 // disk usage of the data directory after the stop
	Empty        *EmptyStart     `json:"emptyRelay"`                   // the reference of the restart
	Restart      *StorageRestart `json:"restart,omitempty"`            // after the queues (and messages)
	Bounds       []Bound         `json:"bounds"`                       // issue 14's, for this scenario
	Note         string          `json:"note"`                         // how the figures were read
}

// storageRelay is a relay of a storage scenario.
type storageRelay struct {
	*server          // the process
	metrics  string  // the metrics endpoint's HOST:PORT; "" without one
	startSec float64 // fork to the "listening on" line
}

// startStorage starts a relay with storageArgs on data ("": a fresh
// directory) and times its start: from just before the fork to the moment
// the launcher read the "listening on" line (and the fingerprint file).
func (s *suite) startStorage(data string) (*storageRelay, error) {
	t0 := time.Now()
	srv, err := s.startIn(data, s.storageArgs()...)
	el := time.Since(t0)
	if err != nil {
		return nil, err
	}
	r := &storageRelay{server: srv, startSec: el.Seconds()}
	if s.c.storageMetrics {
		// The metrics line follows the listening line (smp-server's ready).
		ctx, cancel := context.WithTimeout(s.ctx, startTimeout)
		err := srv.WaitOutput(ctx, "metrics on ", 1)
		cancel()
		if err != nil {
			srv.Kill()
			return nil, err
		}
		r.metrics = metricsAddrIn(srv.Stdout())
	}
	return r, nil
}

// metricsAddrIn is ADDR of the "smp-server: metrics on ADDR" line in out.
func metricsAddrIn(out string) string {
	for _, line := range strings.Split(out, "\n") {
		if _, rest, ok := strings.Cut(line, "metrics on "); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				return f[0]
			}
		}
	}
	return ""
}

// emptyStart measures the empty relay's start once per run: a fresh start,
// then --storage-empty-restarts restarts on its directory, whose median is
// the reference (a restart, as the restarts it is set against are; a few
// of them, since an empty start takes milliseconds and scheduling noise is
// of that order).
func (s *suite) emptyStart() (*EmptyStart, error) {
	if s.empty != nil {
		return s.empty, nil
	}
	p := newProgress("storage: empty relay start", float64(s.c.storageEmptyRestarts+1))
	r, err := s.startStorage("")
	if err != nil {
		p.finish("failed")
		return nil, err
	}
	e := &EmptyStart{FreshSeconds: r.startSec}
	dir := r.DataDir
	for i := range s.c.storageEmptyRestarts {
		if err := r.stop(); err != nil {
			p.finish("failed")
			return nil, err
		}
		if r, err = s.startStorage(dir); err != nil {
			p.finish("failed")
			return nil, err
		}
		e.RestartSeconds = append(e.RestartSeconds, r.startSec)
		p.set(float64(i+2), "")
	}
	m, err := settleRSS(r.Cmd.Process.Pid)
	serr := r.stop()
	if err != nil || serr != nil {
		p.finish("failed")
		return nil, errors.Join(err, serr)
	}
	e.RSS = m.RSS
	e.MedianSeconds = median(e.RestartSeconds)
	s.empty = e
	p.finish(fmt.Sprintf("fresh %.3f s, restart median %.3f s, RSS %.1f MiB", e.FreshSeconds, e.MedianSeconds, mib(e.RSS)))
	return e, nil
}

// restartStorage stops r gracefully and starts a relay on its data
// directory, timing both; it returns the new relay, running, with its
// settled RSS read, and the disk usage of the directory while stopped.
func (s *suite) restartStorage(r *storageRelay, empty *EmptyStart) (*storageRelay, *StorageRestart, int64, error) {
	rs := &StorageRestart{EmptySeconds: empty.MedianSeconds, LimitSeconds: 3*empty.MedianSeconds + 0.5}
	t0 := time.Now()
	if err := r.stop(); err != nil {
		return nil, nil, 0, err
	}
	rs.StopSeconds = time.Since(t0).Seconds()
	du := dirBytes(r.DataDir)
	nr, err := s.startStorage(r.DataDir)
	if err != nil {
		return nil, nil, du, err
	}
	rs.StartSeconds = nr.startSec
	if rs.EmptySeconds > 0 {
		rs.Ratio = rs.StartSeconds / rs.EmptySeconds
	}
	m, err := settleRSS(nr.Cmd.Process.Pid)
	if err != nil {
		nr.Kill()
		return nil, nil, du, err
	}
	rs.RSS, rs.RSSAnon = m.RSS, m.Anon
	return nr, rs, du, nil
}

// storageMessages runs the storage-messages scenario.
func (s *suite) storageMessages() error {
	c := s.c
	res := &StorageMessagesResult{Store: c.storageStore, Queues: c.storageMsgQueues, Messages: c.storageMessages, BodyBytes: c.storageBody,
		Connections: c.storageConns, InFlight: c.storageInflight, ServerArgs: s.storageServerArgs()}
	s.rep.StorageMessages = res
	empty, err := s.emptyStart()
	if err != nil {
		return fmt.Errorf("storage-messages: empty relay: %w", err)
	}
	res.Empty = empty
	r, err := s.startStorage("")
	if err != nil {
		return fmt.Errorf("storage-messages: %w", err)
	}
	defer func() { r.Kill() }() // a no-op once stopped
	base, err := settleRSS(r.Cmd.Process.Pid)
	if err != nil {
		return err
	}
	res.BaseRSS = base.RSS

	p := newProgress(fmt.Sprintf("storage-messages: %d queues", c.storageMsgQueues), float64(c.storageMsgQueues))
	queues := make([]storageQueue, c.storageMsgQueues)
	t0 := time.Now()
	err = createQueues(s.ctx, r, 0, len(queues), c.storageConns, c.storageInflight, true, false, func(i int, q storageQueue) { queues[i] = q }, p)
	if err != nil {
		p.finish("failed")
		return fmt.Errorf("storage-messages: creating queues: %w", err)
	}
	st, err := r.step(len(queues), 0, 0, time.Since(t0))
	if err != nil {
		return err
	}
	res.Steps = append(res.Steps, st)
	p.finish(fmt.Sprintf("RSS %.1f MiB", mib(st.RSS)))

	p = newProgress(fmt.Sprintf("storage-messages: fill %d × %d B", c.storageMessages, c.storageBody), float64(c.storageMessages))
	steps, fillSec, err := fillSteps(s.ctx, r, queues, c.storageMessages, c.storageBody, c.storageSteps, c.storageConns, c.storageInflight, p)
	res.Steps = append(res.Steps, steps...)
	if err != nil {
		p.finish("failed")
		return fmt.Errorf("storage-messages: fill: %w", err)
	}
	res.FillSeconds = fillSec
	res.FillRate = float64(c.storageMessages) / fillSec
	res.RSSAfterFill = res.Steps[len(res.Steps)-1].RSS
	res.PerMessage = stepSlope(res.Steps, func(st StorageStep) int { return st.Messages })
	p.finish(fmt.Sprintf("%.0f msg/s; RSS %.1f MiB, %.0f B per message", res.FillRate, mib(res.RSSAfterFill), res.PerMessage))

	p = newProgress("storage-messages: restart", 1)
	nr, rs, du, err := s.restartStorage(r, empty)
	res.DataDirBytes = du
	if err != nil {
		p.finish("failed")
		return fmt.Errorf("storage-messages: restart: %w", err)
	}
	r = nr
	res.Restart = rs
	res.IndexPerMessage = (float64(rs.RSS) - float64(res.BaseRSS)) / float64(res.Messages)
	p.finish(fmt.Sprintf("%.3f s to listening (%.2f× empty), RSS %.1f MiB", rs.StartSeconds, rs.Ratio, mib(rs.RSS)))

	p = newProgress("storage-messages: cold read", float64(c.storageMessages))
	cr, err := coldRead(s.ctx, r, queues, c.storageMessages, c.storageBody, c.storageConns, p)
	res.ColdRead = cr
	if err != nil {
		p.finish("failed")
		return fmt.Errorf("storage-messages: cold read: %w", err)
	}
	p.finish(fmt.Sprintf("%d messages, %.0f msg/s, cache hit rate %s", cr.Received, cr.Rate, hitRateText(cr)))
	res.Bounds = messageBounds(res)
	res.Note = settleNote()
	return r.stop()
}

// storageQueues runs the storage-queues scenario.
func (s *suite) storageQueues() error {
	c := s.c
	res := &StorageQueuesResult{Store: c.storageStore, Queues: c.storageQueues, Secured: c.storageQueueSecure, Connections: c.storageConns,
		InFlight: c.storageInflight, Messages: c.storageQueueMsgs, MessageBody: c.storageQueueBody, ServerArgs: s.storageServerArgs()}
	s.rep.StorageQueues = res
	empty, err := s.emptyStart()
	if err != nil {
		return fmt.Errorf("storage-queues: empty relay: %w", err)
	}
	res.Empty = empty
	r, err := s.startStorage("")
	if err != nil {
		return fmt.Errorf("storage-queues: %w", err)
	}
	defer func() { r.Kill() }() // a no-op once stopped
	st, err := r.step(0, 0, 0, 0)
	if err != nil {
		return err
	}
	res.BaseRSS = st.RSS
	res.Steps = append(res.Steps, st)

	// Only the large case sends, and only it keeps the sender IDs; one
	// sender key serves every secured queue (the relay stores it per queue
	// all the same), so that the bench does not hold a million keys.
	var queues []storageQueue
	if c.storageQueueMsgs > 0 {
		queues = make([]storageQueue, c.storageQueues)
	}
	p := newProgress(fmt.Sprintf("storage-queues: %d queues", c.storageQueues), float64(c.storageQueues))
	made := 0
	for i := 1; i <= c.storageSteps; i++ {
		to := c.storageQueues * i / c.storageSteps
		if to == made {
			continue
		}
		t0 := time.Now()
		err := createQueues(s.ctx, r, made, to, c.storageConns, c.storageInflight, c.storageQueueSecure, true, func(i int, q storageQueue) {
			if queues != nil {
				queues[i] = q
			}
		}, p)
		if err != nil {
			p.finish("failed")
			return fmt.Errorf("storage-queues: creating queues %d to %d: %w", made, to, err)
		}
		el := time.Since(t0)
		res.CreateSeconds += el.Seconds()
		made = to
		st, err := r.step(made, 0, 0, el)
		if err != nil {
			return err
		}
		res.Steps = append(res.Steps, st)
	}
	res.CreateRate = float64(c.storageQueues) / res.CreateSeconds
	res.PerQueue = stepSlope(res.Steps, func(st StorageStep) int { return st.Queues })
	p.finish(fmt.Sprintf("%.0f queues/s; RSS %.1f MiB, %.0f B per queue", res.CreateRate, mib(res.Steps[len(res.Steps)-1].RSS), res.PerQueue))

	if c.storageQueueMsgs > 0 {
		p = newProgress(fmt.Sprintf("storage-queues: fill %d × %d B", c.storageQueueMsgs, c.storageQueueBody), float64(c.storageQueueMsgs))
		steps, fillSec, err := fillSteps(s.ctx, r, queues, c.storageQueueMsgs, c.storageQueueBody, c.storageSteps, c.storageConns, c.storageInflight, p)
		res.MessageSteps = steps
		if err != nil {
			p.finish("failed")
			return fmt.Errorf("storage-queues: fill: %w", err)
		}
		res.FillSeconds = fillSec
		res.PerMessage = stepSlope(steps, func(st StorageStep) int { return st.Messages })
		p.finish(fmt.Sprintf("%.0f msg/s; RSS %.1f MiB", float64(c.storageQueueMsgs)/fillSec, mib(steps[len(steps)-1].RSS)))
	}

	p = newProgress("storage-queues: restart", 1)
	nr, rs, du, err := s.restartStorage(r, empty)
	res.DataDirBytes = du
	if err != nil {
		p.finish("failed")
		return fmt.Errorf("storage-queues: restart: %w", err)
	}
	r = nr
	res.Restart = rs
	if res.Messages == 0 {
		res.IndexPerQueue = (float64(rs.RSS) - float64(res.BaseRSS)) / float64(res.Queues)
	}
	p.finish(fmt.Sprintf("%.3f s to listening (%.2f× empty), RSS %.1f MiB", rs.StartSeconds, rs.Ratio, mib(rs.RSS)))
	res.Bounds = queueBounds(res)
	res.Note = settleNote()
	return r.stop()
}

// storageServerArgs is every flag the storage relays get after start
// --data --listen, for the report.
func (s *suite) storageServerArgs() string {
	return strings.Join(slices.Concat(capacityArgs, s.c.serverArgs, s.storageArgs()), " ")
}

// step reads r's settled RSS (and its Go heap, with metrics) for a step
// that left queues queues and messages messages of body bytes stored.
func (r *storageRelay) step(queues, messages int, body int, took time.Duration) (StorageStep, error) {
	t0 := time.Now()
	m, err := settleRSS(r.Cmd.Process.Pid)
	if err != nil {
		return StorageStep{}, err
	}
	st := StorageStep{Queues: queues, Messages: messages, StoredBytes: int64(messages) * int64(body), RSS: m.RSS, RSSAnon: m.Anon,
		RSSFile: m.File, StepSeconds: took.Seconds(), SettleSeconds: time.Since(t0).Seconds()}
	if r.metrics != "" {
		// After the reading: a scrape allocates in the relay.
		if ms, err := scrapeMetrics(r.metrics); err == nil {
			st.HeapInuse = uint64(ms["go_memstats_heap_inuse_bytes"])
		}
	}
	return st, nil
}

// storageQueue is a queue the bench made: its IDs and the keys kept for
// sending to it and draining it (nil when not kept).
type storageQueue struct {
	rid, sid []byte
	rk, sk   *codec.Signer
}

// sharedSenderKey is the one sender key of the secured queues of
// storage-queues.
var sharedSenderKey = sync.OnceValues(func() (*codec.Signer, error) { return codec.GenerateSigner(codec.SigEd25519, 0) })

// createQueues makes queues from to to (exclusive) on conns fresh
// connections, with inflight NEWs at once, each with an Ed25519 recipient
// key of its own; secure adds KEY with a sender key (one per queue, or
// sharedSenderKey with shared). made gets each queue, from any goroutine;
// queue i is made on connection i mod conns. The connections are closed
// before it returns: NEW subscribes its connection, and the readings are
// of queues, not of subscriptions.
func createQueues(ctx context.Context, r *storageRelay, from, to, conns, inflight int, secure, shared bool, made func(int, storageQueue), p *progress) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	cs, err := dialAll(ctx, r, conns, nil)
	defer closeAll(cs)
	if err != nil {
		return err
	}
	var next, done atomic.Int64
	next.Store(int64(from))
	var wg sync.WaitGroup
	for range min(inflight, to-from) {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= to {
					return
				}
				q, err := makeQueue(ctx, cs[i%len(cs)], secure, shared)
				if err != nil {
					cancel(fmt.Errorf("queue %d: %w", i, err))
					return
				}
				made(i, q)
				p.set(float64(from)+float64(done.Add(1)), "")
			}
		})
	}
	wg.Wait()
	return context.Cause(ctx)
}

// makeQueue makes one queue on c: NEW, and KEY when secure.
func makeQueue(ctx context.Context, c *client.Conn, secure, shared bool) (storageQueue, error) {
	rk, err := codec.GenerateSigner(codec.SigEd25519, 0)
	if err != nil {
		return storageQueue{}, err
	}
	ids, err := c.NewQueue(ctx, rk)
	if err != nil {
		return storageQueue{}, err
	}
	q := storageQueue{rid: ids.RID, sid: ids.SID, rk: rk}
	if !secure {
		return q, nil
	}
	if shared {
		q.sk, err = sharedSenderKey()
	} else {
		q.sk, err = codec.GenerateSigner(codec.SigEd25519, 0)
	}
	if err != nil {
		return q, err
	}
	return q, c.Secure(ctx, ids.RID, rk, q.sk.PublicSPKI())
}

// dialAll dials n connections to r at once, with onEvent as their event
// handler (nil: none); the ones that opened are returned even on an error.
func dialAll(ctx context.Context, r *storageRelay, n int, onEvent func(client.Event)) ([]*client.Conn, error) {
	d := &dialer{}
	cs := make([]*client.Conn, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { cs[i], errs[i] = client.Dial(ctx, r.Addr, benchOptions(r.Fingerprint, d, onEvent)) })
	}
	wg.Wait()
	return slices.DeleteFunc(cs, func(c *client.Conn) bool { return c == nil }), errors.Join(errs...)
}

func closeAll(cs []*client.Conn) {
	for _, c := range cs {
		c.Close()
	}
}

// fillSteps sends total messages of body random bytes round-robin over
// queues (message i to queue i mod len(queues), signed by its sender key
// when it has one) in steps, reading the relay after each. It returns the
// steps and the time spent sending.
func fillSteps(ctx context.Context, r *storageRelay, queues []storageQueue, total, body, steps, conns, inflight int, p *progress) ([]StorageStep, float64, error) {
	cs, err := dialAll(ctx, r, conns, nil)
	defer closeAll(cs)
	if err != nil {
		return nil, 0, err
	}
	var out []StorageStep
	var sending time.Duration
	sent := 0
	for i := 1; i <= steps; i++ {
		to := total * i / steps
		if to == sent {
			continue
		}
		t0 := time.Now()
		if err := fill(ctx, cs, queues, sent, to, body, inflight, p); err != nil {
			return out, sending.Seconds(), err
		}
		el := time.Since(t0)
		sending += el
		sent = to
		st, err := r.step(len(queues), sent, body, el)
		if err != nil {
			return out, sending.Seconds(), err
		}
		out = append(out, st)
	}
	return out, sending.Seconds(), nil
}

// fill sends messages from to to (exclusive) with inflight SENDs at once,
// each body fresh random bytes: the store may compress (the wal compresses
// its batches), and a repeated body would compress to nothing. Queue q's
// messages go on connection q mod len(cs). It stops at the first failure:
// a fill that stored less than it says would make every figure wrong.
func fill(ctx context.Context, cs []*client.Conn, queues []storageQueue, from, to, body, inflight int, p *progress) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next atomic.Int64
	next.Store(int64(from))
	var wg sync.WaitGroup
	for range min(inflight, to-from) {
		wg.Go(func() {
			var seed [32]byte
			_, _ = rand.Read(seed[:])
			rnd := mrand.NewChaCha8(seed)
			buf := make([]byte, body)
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= to {
					return
				}
				qi := i % len(queues)
				q := queues[qi]
				_, _ = rnd.Read(buf)
				if err := cs[qi%len(cs)].Send(ctx, q.sid, q.sk, buf); err != nil {
					cancel(fmt.Errorf("message %d to queue %d: %w", i, qi, err))
					return
				}
				p.set(float64(i+1), "")
			}
		})
	}
	wg.Wait()
	return context.Cause(ctx)
}

// coldRead drains every queue of r, which holds expected messages of body
// bytes in all: each queue is subscribed (SUB answers with its first
// message) and acknowledged until an ACK answers OK, all queues at once,
// over conns connections. With metrics it reads the store's cache counters
// before and after.
func coldRead(ctx context.Context, r *storageRelay, queues []storageQueue, expected, body, conns int, p *progress) (*ColdRead, error) {
	cr := &ColdRead{Queues: len(queues), Connections: conns, Expected: expected}
	var events, bad atomic.Int64
	// seen gets a token per message event: the events reach the handler on
	// the connections' dispatcher goroutines, after SUB or ACK returned, so
	// the counts are read once there are as many tokens as messages.
	seen := make(chan struct{}, expected+len(queues))
	onEvent := func(e client.Event) {
		if e.Kind == client.EventMessage {
			events.Add(1)
			if len(e.Message.Body) != body {
				bad.Add(1)
			}
			select {
			case seen <- struct{}{}:
			default:
			}
		}
	}
	cs, err := dialAll(ctx, r, conns, onEvent)
	defer closeAll(cs)
	if err != nil {
		return cr, err
	}
	before, berr := cacheCounters(r.metrics)
	u0, err := r.usage()
	if err != nil {
		return cr, err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var received atomic.Int64
	var wg sync.WaitGroup
	t0 := time.Now()
	for qi, q := range queues {
		wg.Go(func() {
			c := cs[qi%len(cs)]
			ack, err := c.PrepareAck(q.rid, q.rk)
			if err != nil {
				cancel(err)
				return
			}
			got, err := c.Subscribe(ctx, q.rid, q.rk)
			for err == nil && got {
				p.set(float64(received.Add(1)), "")
				var cmd codec.Cmd
				cmd, err = c.Do(ctx, ack)
				got = cmd == codec.CmdMSG
			}
			if err != nil {
				cancel(fmt.Errorf("queue %d: %w", qi, err))
			}
		})
	}
	wg.Wait()
	cr.Seconds = time.Since(t0).Seconds()
	if err := context.Cause(ctx); err != nil {
		return cr, err
	}
	u1, err := r.usage()
	if err != nil {
		return cr, err
	}
	cr.ServerCPU = (u1.CPU - u0.CPU).Seconds()
	cr.Received = received.Load()
	late := time.NewTimer(time.Minute)
	defer late.Stop()
	for range cr.Received {
		select {
		case <-seen:
		case <-late.C:
			return cr, fmt.Errorf("%d messages received, their events not all handled a minute later (%d)", cr.Received, events.Load())
		case <-ctx.Done():
			return cr, ctx.Err()
		}
	}
	cr.Events, cr.BadBodies = events.Load(), bad.Load()
	cr.Rate = float64(cr.Received) / cr.Seconds
	after, aerr := cacheCounters(r.metrics)
	switch {
	case r.metrics == "":
		cr.CacheNote = "the relay ran without --metrics-listen (--storage-metrics=false)"
	case berr != nil || aerr != nil:
		cr.CacheNote = cmp.Or(berr, aerr).Error()
	default:
		cr.CacheHits, cr.CacheMisses = after.hits-before.hits, after.misses-before.misses
		if n := cr.CacheHits + cr.CacheMisses; n > 0 {
			rate := cr.CacheHits / n
			cr.HitRate = &rate
		}
		cr.CacheNote = after.names
	}
	m, err := settleRSS(r.Cmd.Process.Pid)
	if err != nil {
		return cr, err
	}
	cr.RSSAfter = m.RSS
	if cr.Received != int64(expected) || cr.BadBodies > 0 {
		return cr, fmt.Errorf("received %d messages (%d with a body of the wrong length), %d were stored", cr.Received, cr.BadBodies, expected)
	}
	return cr, nil
}

// memReading is one reading of /proc/<pid>/status, in bytes.
type memReading struct {
	RSS, Anon, File uint64 // VmRSS, RssAnon, RssFile
}

// readMem reads VmRSS, RssAnon and RssFile of pid.
func readMem(pid int) (memReading, error) {
	var m memReading
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return m, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		var dst *uint64
		switch k {
		case "VmRSS":
			dst = &m.RSS
		case "RssAnon":
			dst = &m.Anon
		case "RssFile":
			dst = &m.File
		default:
			continue
		}
		kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return m, fmt.Errorf("/proc/%d/status: %s %q", pid, k, v)
		}
		*dst = kb << 10
	}
	if m.RSS == 0 {
		return m, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
	}
	return m, nil
}

// The settling of settleRSS: a reading every settleEveryStorage; settled
// once the last settleWindow readings are within settleSpread of each
// other, or after settleMax. Tests shorten settleEveryStorage.
var settleEveryStorage = 100 * time.Millisecond

const (
	settleWindow = 5
	settleSpread = 0.01
	settleMax    = 15 * time.Second
)

// settleNote says how the RSS figures were read, for the report.
func settleNote() string {
	return fmt.Sprintf("RSS is VmRSS from /proc/PID/status, read with the relay idle (every command of the step answered, nothing sent meanwhile): "+
		"every %v until the last %d readings (%v) are within %.0f%% of each other, or %v pass; the figure is the lowest of those %d. ",
		settleEveryStorage, settleWindow, settleEveryStorage*settleWindow, settleSpread*100, settleMax, settleWindow) + settleNoteRest
}

// settleNoteRest is the rest of the method: what the figures include and
// what the start times are.
const settleNoteRest = "A GC cannot be forced from outside without changing the relay (GOGC, GOMEMLIMIT, a debug endpoint), so the figures include garbage " +
	"the Go runtime has not yet collected: what an operator sees, and an upper bound of the live memory. Slopes are least squares over " +
	"the steps that stored something (the step before the first message or queue left out, so that a cache filling up at the start does not " +
	"count per message). Start times run from just before the fork to the moment the bench read the \"listening on\" line; the empty relay's " +
	"is the median of its restarts, nothing stored, same flags. The page cache is warm: the data directory was just written."

// settleRSS reads pid's memory until it settles (see settleNote) and
// returns the reading with the lowest VmRSS of the last window. Waiting for
// it to settle is the measurement, not synchronisation: the relay is idle.
func settleRSS(pid int) (memReading, error) {
	var win []memReading
	deadline := time.Now().Add(settleMax)
	for {
		m, err := readMem(pid)
		if err != nil {
			return m, err
		}
		win = append(win, m)
		if len(win) > settleWindow {
			win = win[1:]
		}
		lo := slices.MinFunc(win, func(a, b memReading) int { return cmpU64(a.RSS, b.RSS) })
		hi := slices.MaxFunc(win, func(a, b memReading) int { return cmpU64(a.RSS, b.RSS) })
		if (len(win) == settleWindow && float64(hi.RSS-lo.RSS) <= settleSpread*float64(hi.RSS)) || time.Now().After(deadline) {
			return lo, nil
		}
		time.Sleep(settleEveryStorage)
	}
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// stepSlope fits RSS = a + b·x(step) by least squares over the steps whose
// x is positive (with the first step too when fewer than two are) and
// returns b.
func stepSlope(steps []StorageStep, x func(StorageStep) int) float64 {
	var xs, ys []float64
	for _, st := range steps {
		if x(st) > 0 && (len(xs) == 0 || float64(x(st)) != xs[len(xs)-1]) {
			xs, ys = append(xs, float64(x(st))), append(ys, float64(st.RSS))
		}
	}
	if len(xs) < 2 && len(steps) > 0 && x(steps[0]) == 0 {
		xs, ys = append([]float64{0}, xs...), append([]float64{float64(steps[0].RSS)}, ys...)
	}
	return leastSquares(xs, ys)
}

// leastSquares returns the slope b of y = a + b·x fitted to the points; 0
// with fewer than two distinct x.
func leastSquares(xs, ys []float64) float64 {
	if len(xs) < 2 {
		return 0
	}
	var mx, my float64
	for i := range xs {
		mx += xs[i]
		my += ys[i]
	}
	mx /= float64(len(xs))
	my /= float64(len(xs))
	var num, den float64
	for i := range xs {
		num += (xs[i] - mx) * (ys[i] - my)
		den += (xs[i] - mx) * (xs[i] - mx)
	}
	if den == 0 {
		return 0
	}
	return num / den
}

// median of xs (0 for none).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(xs))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// dirBytes is the disk usage of the files under dir (allocated blocks, so
// sparse and punched files count what they hold); 0 when it cannot be read.
func dirBytes(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if fi, err := d.Info(); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				n += st.Blocks * 512
			}
		}
		return nil
	})
	return n
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// messageBounds are issue 14's bounds for storage-messages.
func messageBounds(r *StorageMessagesResult) []Bound {
	const limit = 256 << 20
	var out []Bound
	out = append(out, Bound{"relay RSS after the fill < 256 MiB", fmt.Sprintf("%.1f MiB", mib(r.RSSAfterFill)), r.RSSAfterFill < limit})
	if rs := r.Restart; rs != nil {
		out = append(out, Bound{"relay RSS after the restart < 256 MiB", fmt.Sprintf("%.1f MiB", mib(rs.RSS)), rs.RSS < limit})
	}
	if r.Restart != nil {
		out = append(out, Bound{"RAM per stored message ≤ 64 B", fmt.Sprintf("%.1f B (RSS after the restart less the fresh relay's, per message; the fill's slope, cache and garbage included, was %.1f B)", r.IndexPerMessage, r.PerMessage), r.IndexPerMessage <= 64})
	}
	if rs := r.Restart; rs != nil {
		out = append(out, Bound{"time to listening after the restart ≤ 3 × an empty relay's + 0.5 s",
			fmt.Sprintf("%.3f s against %.3f s (3 × %.3f s + 0.5 s; %.2f× the empty relay)", rs.StartSeconds, rs.LimitSeconds, rs.EmptySeconds, rs.Ratio),
			rs.StartSeconds <= rs.LimitSeconds})
	}
	return out
}

// queueBounds are issue 14's bounds for storage-queues.
func queueBounds(r *StorageQueuesResult) []Bound {
	what := "empty queue with an Ed25519 key"
	if r.Secured {
		what = "secured queue (Ed25519 recipient and sender keys)"
	}
	if r.IndexPerQueue > 0 {
		return []Bound{{"RAM per " + what + " ≤ 400 B beyond the cache", fmt.Sprintf("%.1f B (RSS after the restart less the fresh relay's, per queue; the creation's slope, garbage included, was %.1f B)", r.IndexPerQueue, r.PerQueue), r.IndexPerQueue <= 400}}
	}
	return []Bound{{"RAM per " + what + " ≤ 400 B beyond the cache", fmt.Sprintf("%.1f B (RSS slope over %d queues)", r.PerQueue, r.Queues), r.PerQueue <= 400}}
}
