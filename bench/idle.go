package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/smprelay/smprelay/client"
	"github.com/smprelay/smprelay/codec"
)

// perWorker is how many connections one worker process holds: well under the
// open-file limit of one process, and few enough per source address
// (127.0.0.x, one per worker) that ephemeral ports never run out.
const perWorker = 5000

// IdleResult is the idle-connections scenario.
type IdleResult struct {
	KEM        string     `json:"kem"`
	ServerMax  int        `json:"serverMaxConns"` // the server's own limit (--max-conns, default open files − 64)
	BaseRSS    uint64     `json:"baseRssBytes"`   // server RSS with no connection, settled
	Steps      []IdleStep `json:"steps"`
	SlopeBytes float64    `json:"rssPerConnectionBytes"` // least squares over the steps
	At100k     uint64     `json:"projectedRss100kBytes"`
	At1M       uint64     `json:"projectedRss1MBytes"`
	StoppedBy  string     `json:"stoppedBy"`
	Workers    int        `json:"workers"`
	SampleSize int        `json:"sampleSize"`
	Note       string     `json:"note"`
}

// IdleStep is one step: conns subscribed idle connections held open.
type IdleStep struct {
	Conns       int     `json:"connections"`
	RSS         uint64  `json:"serverRssBytes"`
	PerConn     float64 `json:"rssPerConnectionSinceBaseBytes"`
	OpenSeconds float64 `json:"openSeconds"`
	Probed      int     `json:"probed"`
	Delivered   int     `json:"delivered"`
}

// workerProc is a "bench worker" subprocess and its pipe protocol: one
// command line in, one JSON line out.
type workerProc struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Scanner
	held int
}

type workerReply struct {
	Held      int    `json:"held"`
	Errors    int    `json:"errors"`
	FirstErr  string `json:"firstErr,omitempty"`
	Probed    int    `json:"probed"`
	Delivered int    `json:"delivered"`
}

func (w *workerProc) ask(line string) (workerReply, error) {
	var r workerReply
	if _, err := fmt.Fprintln(w.in, line); err != nil {
		return r, fmt.Errorf("worker: sending %q: %w", line, err)
	}
	if !w.out.Scan() {
		return r, fmt.Errorf("worker: no reply to %q: %v", line, w.out.Err())
	}
	if err := json.Unmarshal(w.out.Bytes(), &r); err != nil {
		return r, fmt.Errorf("worker: reply %q: %w", w.out.Text(), err)
	}
	return r, nil
}

// serverMaxConns is what the server's default --max-conns works out to:
// its open-file soft limit less 64 (transport.ConnLimits).
func serverMaxConns(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Max open files"); ok {
			f := strings.Fields(rest)
			if n, err := strconv.Atoi(f[0]); err == nil {
				return n - 64
			}
		}
	}
	return 0
}

// runIdle opens connections in steps; each does NEW, which subscribes it.
// steps may end in 0, meaning "as many as the server's limit permits".
func runIdle(ctx context.Context, srv *server, kem string, steps []int, sample int, p *progress) (*IdleResult, error) {
	res := &IdleResult{KEM: kem, SampleSize: sample, ServerMax: serverMaxConns(srv.Cmd.Process.Pid)}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	if res.BaseRSS, err = srv.settledRSS(); err != nil {
		return nil, err
	}
	top := 0
	for i, s := range steps {
		if s == 0 { // "max": the server's limit, less one probe connection per worker and a margin
			workers := (res.ServerMax + perWorker - 1) / perWorker
			steps[i] = res.ServerMax - workers - 8
		}
		top = max(top, steps[i])
	}
	var workers []*workerProc
	defer func() {
		for _, w := range workers {
			_ = w.in.Close()
			done := make(chan struct{})
			go func() { _ = w.cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				_ = w.cmd.Process.Kill()
				<-done
			}
		}
	}()
	spawn := func() (*workerProc, error) {
		src := fmt.Sprintf("127.0.0.%d", 100+len(workers))
		cmd, in, out, err := startChild(ctx, exe, "a worker process", "worker", "--addr", srv.Addr, "--fp", srv.Fingerprint, "--src", src)
		if err != nil {
			return nil, err
		}
		w := &workerProc{cmd: cmd, in: in, out: out}
		workers = append(workers, w)
		return w, nil
	}
	held := 0
	for si, target := range steps {
		if target > res.ServerMax && res.ServerMax > 0 {
			res.StoppedBy = fmt.Sprintf("server limit: --max-conns %d (the server's open-file limit less 64)", res.ServerMax)
			break
		}
		t0 := time.Now()
		failed := ""
		for held < target && failed == "" {
			var w *workerProc
			for _, x := range workers {
				if x.held < perWorker {
					w = x
					break
				}
			}
			if w == nil {
				if w, err = spawn(); err != nil {
					return res, err
				}
			}
			n := min(target-held, perWorker-w.held)
			r, err := w.ask("open " + strconv.Itoa(n))
			if err != nil {
				return res, err
			}
			held += r.Held - w.held
			w.held = r.Held
			p.set(float64(held), fmt.Sprintf("%d connections", held))
			if r.Errors > 0 {
				failed = fmt.Sprintf("%d connections failed to open (first: %s)", r.Errors, r.FirstErr)
			}
		}
		openSec := time.Since(t0).Seconds()
		rss, err := srv.settledRSS()
		if err != nil {
			return res, err
		}
		st := IdleStep{Conns: held, RSS: rss, OpenSeconds: openSec}
		if held > 0 {
			st.PerConn = (float64(rss) - float64(res.BaseRSS)) / float64(held)
		}
		for _, w := range workers {
			k := (sample*w.held + held - 1) / max(held, 1)
			r, err := w.ask("probe " + strconv.Itoa(k))
			if err != nil {
				return res, err
			}
			st.Probed += r.Probed
			st.Delivered += r.Delivered
		}
		res.Steps = append(res.Steps, st)
		if failed != "" {
			res.StoppedBy = fmt.Sprintf("at step %d (%d wanted, %d open): %s", si+1, target, held, failed)
			break
		}
	}
	res.Workers = len(workers)
	if res.StoppedBy == "" {
		res.StoppedBy = fmt.Sprintf("the last step asked for (%d); the server's own limit is %d (open-file limit %d less 64) and "+
			"this machine's hard open-file limit cannot be raised without privileges", top, res.ServerMax, res.ServerMax+64)
	}
	res.SlopeBytes = slope(res)
	if res.SlopeBytes > 0 {
		res.At100k = uint64(float64(res.BaseRSS) + res.SlopeBytes*1e5)
		res.At1M = uint64(float64(res.BaseRSS) + res.SlopeBytes*1e6)
	}
	res.Note = "connections spread over worker processes, one source address (127.0.0.x) each; every connection did NEW, " +
		"which subscribes it; RSS read after it settled; a random sample of each step gets one message each"
	return res, nil
}

// slope fits RSS = a + b·conns over the steps (with the baseline when there
// is only one step) by least squares and returns b.
func slope(r *IdleResult) float64 {
	xs, ys := []float64{}, []float64{}
	for _, s := range r.Steps {
		xs, ys = append(xs, float64(s.Conns)), append(ys, float64(s.RSS))
	}
	if len(xs) < 2 {
		xs, ys = append(xs, 0), append(ys, float64(r.BaseRSS))
	}
	return leastSquares(xs, ys)
}

// idleConn is one connection a worker holds.
type idleConn struct {
	c        *client.Conn
	rid, sid []byte
	got      chan struct{} // a message arrived
}

// workerMain is "bench worker": it holds idle connections for the parent,
// taking commands on stdin ("open N", "probe K") and answering each with one
// JSON line on stdout. It ends when stdin closes.
func workerMain(args []string) int {
	fl := flag.NewFlagSet("bench worker", flag.ContinueOnError)
	addr := fl.String("addr", "", "server address")
	fp := fl.String("fp", "", "server fingerprint")
	src := fl.String("src", "127.0.0.1", "source address")
	if err := fl.Parse(args); err != nil {
		return 2
	}
	raiseNoFile()
	ctx := context.Background()
	rk, err := codec.GenerateSigner(codec.SigEd25519, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench worker:", err)
		return 1
	}
	local := &dialer{}
	srcIP := *src
	dial := func(ctx context.Context, network, a string) (net.Conn, error) { return local.dialFrom(ctx, srcIP, a) }
	var mu sync.Mutex
	var conns []*idleConn
	var probe *client.Conn
	enc := json.NewEncoder(os.Stdout)
	in := bufio.NewScanner(os.Stdin)
	var firstErr atomic.Value
	for in.Scan() {
		cmd, arg, _ := strings.Cut(in.Text(), " ")
		n, _ := strconv.Atoi(arg)
		var rep workerReply
		switch cmd {
		case "open":
			var errs atomic.Int64
			var wg sync.WaitGroup
			jobs := make(chan struct{}, n)
			for range n {
				jobs <- struct{}{}
			}
			close(jobs)
			for range 64 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range jobs {
						ic := &idleConn{got: make(chan struct{}, 1)}
						opts := client.Options{Fingerprint: *fp, PingInterval: -1, NoReconnect: true, Timeout: time.Minute,
							DialContext: dial, OnEvent: func(e client.Event) {
								if e.Kind == client.EventMessage {
									select {
									case ic.got <- struct{}{}:
									default:
									}
								}
							}}
						c, err := client.Dial(ctx, *addr, opts)
						if err == nil {
							var ids client.QueueIDs
							if ids, err = c.NewQueue(ctx, rk); err == nil {
								ic.c, ic.rid, ic.sid = c, ids.RID, ids.SID
							} else {
								c.Close()
							}
						}
						if err != nil {
							errs.Add(1)
							firstErr.CompareAndSwap(nil, err.Error())
							continue
						}
						mu.Lock()
						conns = append(conns, ic)
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			rep.Errors = int(errs.Load())
			if e, ok := firstErr.Load().(string); ok {
				rep.FirstErr = e
			}
		case "probe":
			if probe == nil {
				if probe, err = client.Dial(ctx, *addr, client.Options{Fingerprint: *fp, PingInterval: -1, NoReconnect: true, DialContext: dial}); err != nil {
					rep.Errors, rep.FirstErr = 1, err.Error()
					break
				}
			}
			for _, i := range rand.Perm(len(conns))[:min(n, len(conns))] {
				ic := conns[i]
				rep.Probed++
				if err := probe.Send(ctx, ic.sid, nil, []byte("probe")); err != nil {
					continue
				}
				select {
				case <-ic.got:
					if _, err := ic.c.Ack(ctx, ic.rid, rk); err == nil {
						rep.Delivered++
					}
				case <-time.After(10 * time.Second):
				}
			}
		default:
			fmt.Fprintf(os.Stderr, "bench worker: unknown command %q\n", in.Text())
			return 2
		}
		rep.Held = len(conns)
		if err := enc.Encode(rep); err != nil {
			return 1
		}
	}
	for _, ic := range conns {
		ic.c.Close()
	}
	if probe != nil {
		probe.Close()
	}
	if err := in.Err(); err != nil && !errors.Is(err, io.EOF) {
		return 1
	}
	return 0
}
