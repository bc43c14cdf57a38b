package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"time"
)

// The hostile scenario's honest client runs by default in a process of its
// own ("bench honest", this binary re-executed, as "bench worker" is for idle
// connections), so that what it measures is the relay's doing and not the
// attackers' goroutines starving it inside a shared Go runtime: a flood
// writing 170 MB/s from 8 connections, or dialing 20k connections/s, keeps
// every P of the bench busy, and an honest client in the same process then
// sends late rather than waits in the relay. --hostile-honest-process=false
// runs it in this process, as before, to compare the two.

// honestRunner is the honest client, in this process or in its own.
type honestRunner interface {
	// queueRID is the honest recipient's queue ID (for sub-steal).
	queueRID() []byte
	// measure runs the honest client until phase ends (see honest.measure).
	measure(phase, ctx context.Context, rate float64) (HonestStats, error)
	// recoverWait is honest.recover.
	recoverWait(ctx context.Context, limit time.Duration) (float64, error)
	// pid is the process the honest client runs in.
	pid() int
	close() error
}

// localHonest is the honest client in this process.
type localHonest struct{ h *honest }

func (l localHonest) queueRID() []byte { return l.h.rid }
func (l localHonest) pid() int         { return os.Getpid() }
func (l localHonest) close() error     { l.h.close(); return nil }
func (l localHonest) measure(phase, ctx context.Context, rate float64) (HonestStats, error) {
	return l.h.measure(phase, ctx, rate), nil
}
func (l localHonest) recoverWait(ctx context.Context, limit time.Duration) (float64, error) {
	return l.h.recover(ctx, limit), nil
}

// honestRequest is one command line to a "bench honest" process.
type honestRequest struct {
	Cmd     string  `json:"cmd"`               // "measure" or "recover"
	Seconds float64 `json:"seconds,omitempty"` // measure: the phase's length from now
	Rate    float64 `json:"rate,omitempty"`    // measure: cycles per second
	LimitMs float64 `json:"limitMs,omitempty"` // recover: the per-cycle limit
}

// honestReply is one JSON line back: first, once the client is connected
// and its queue secured, RID (or Error); then one per request.
type honestReply struct {
	RID             []byte       `json:"rid,omitempty"`
	Honest          *HonestStats `json:"honest,omitempty"`
	RecoverySeconds float64      `json:"recoverySeconds"`
	Error           string       `json:"error,omitempty"`
}

// honestProc is a "bench honest" subprocess.
type honestProc struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
	rid []byte
}

// startHonestProc starts the honest client in its own process, which
// inherits this process's CPU mask (the generator cores under --pin). ctx
// ending kills it.
func startHonestProc(ctx context.Context, hp honestParams) (*honestProc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd, in, out, err := startChild(ctx, exe, "the honest client process", "honest", "--addr", hp.Addr, "--fp", hp.FP,
		"--src", hp.Src, "--body", strconv.Itoa(hp.Body), "--timeout", hp.Timeout.String(), "--dial-every", hp.DialEvery.String())
	if err != nil {
		return nil, err
	}
	p := &honestProc{cmd: cmd, in: in, out: out}
	p.out.Buffer(make([]byte, 0, 64<<10), 1<<20)
	r, err := p.read()
	if err == nil && len(r.RID) == 0 {
		err = errors.New("honest client process: no queue ID")
	}
	if err != nil {
		_ = p.close()
		return nil, err
	}
	p.rid = r.RID
	return p, nil
}

func (p *honestProc) read() (honestReply, error) {
	var r honestReply
	if !p.out.Scan() {
		return r, fmt.Errorf("honest client process: no reply: %v", p.out.Err())
	}
	if err := json.Unmarshal(p.out.Bytes(), &r); err != nil {
		return r, fmt.Errorf("honest client process: reply %q: %w", p.out.Text(), err)
	}
	if r.Error != "" {
		return r, errors.New("honest client process: " + r.Error)
	}
	return r, nil
}

func (p *honestProc) ask(req honestRequest) (honestReply, error) {
	b, _ := json.Marshal(req)
	if _, err := fmt.Fprintf(p.in, "%s\n", b); err != nil {
		return honestReply{}, fmt.Errorf("honest client process: sending %s: %w", b, err)
	}
	return p.read()
}

func (p *honestProc) queueRID() []byte { return p.rid }
func (p *honestProc) pid() int         { return p.cmd.Process.Pid }

func (p *honestProc) measure(phase, ctx context.Context, rate float64) (HonestStats, error) {
	d := time.Duration(0)
	if dl, ok := phase.Deadline(); ok {
		d = time.Until(dl)
	}
	r, err := p.ask(honestRequest{Cmd: "measure", Seconds: max(0, d.Seconds()), Rate: rate})
	if err == nil && r.Honest == nil {
		err = errors.New("honest client process: no stats in the reply")
	}
	if err != nil {
		if ctx.Err() != nil {
			return HonestStats{}, ctx.Err()
		}
		return HonestStats{}, err
	}
	return *r.Honest, nil
}

func (p *honestProc) recoverWait(ctx context.Context, limit time.Duration) (float64, error) {
	r, err := p.ask(honestRequest{Cmd: "recover", LimitMs: float64(limit) / float64(time.Millisecond)})
	if err != nil && ctx.Err() != nil {
		return 0, ctx.Err()
	}
	return r.RecoverySeconds, err
}

// close ends the process by closing its stdin, and kills it if it has not
// exited 10 s later.
func (p *honestProc) close() error {
	_ = p.in.Close()
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		return <-done
	}
}

// honestMain is "bench honest": the hostile scenario's honest client in its
// own process. It connects (flags: the relay and the client's parameters),
// answers with the queue's RID, then takes one JSON honestRequest per stdin
// line and answers each with one JSON honestReply line on stdout. It ends
// when stdin closes.
func honestMain(args []string) int {
	fl := flag.NewFlagSet("bench honest", flag.ContinueOnError)
	var hp honestParams
	fl.StringVar(&hp.Addr, "addr", "", "relay address")
	fl.StringVar(&hp.FP, "fp", "", "relay fingerprint")
	fl.StringVar(&hp.Src, "src", honestSrc, "source address")
	fl.IntVar(&hp.Body, "body", 0, "SEND body bytes")
	fl.DurationVar(&hp.Timeout, "timeout", honestTimeout, "per dial and cycle")
	fl.DurationVar(&hp.DialEvery, "dial-every", honestDialEvery, "dial probe period")
	if err := fl.Parse(args); err != nil {
		return 2
	}
	ctx := context.Background()
	enc := json.NewEncoder(os.Stdout)
	h, err := newHonest(ctx, hp)
	if err != nil {
		_ = enc.Encode(honestReply{Error: err.Error()})
		return 1
	}
	defer h.close()
	if err := enc.Encode(honestReply{RID: h.rid}); err != nil {
		return 1
	}
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		var req honestRequest
		var rep honestReply
		if err := json.Unmarshal(in.Bytes(), &req); err != nil {
			rep.Error = fmt.Sprintf("request %q: %v", in.Text(), err)
		} else {
			switch req.Cmd {
			case "measure":
				phase, cancel := context.WithTimeout(ctx, time.Duration(req.Seconds*float64(time.Second)))
				st := h.measure(phase, ctx, req.Rate)
				cancel()
				rep.Honest = &st
			case "recover":
				rep.RecoverySeconds = h.recover(ctx, time.Duration(req.LimitMs*float64(time.Millisecond)))
			default:
				rep.Error = fmt.Sprintf("unknown command %q", req.Cmd)
			}
		}
		if err := enc.Encode(rep); err != nil {
			return 1
		}
	}
	if err := in.Err(); err != nil {
		return 1
	}
	return 0
}
