package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// progress draws one bar on stderr: redrawn in place with \r when stderr is
// a terminal, otherwise a plain line when it starts and one when it ends.
// Its methods are safe from any goroutine.
type progress struct {
	mu    sync.Mutex
	w     io.Writer
	tty   bool
	label string
	total float64
	start time.Time
	last  time.Time
	done  bool
}

var stderrIsTTY = func() bool {
	fi, err := os.Stderr.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}()

func newProgress(label string, total float64) *progress {
	p := &progress{w: os.Stderr, tty: stderrIsTTY, label: label, total: total, start: time.Now()}
	if !p.tty {
		fmt.Fprintf(p.w, "bench: %s ...\n", label)
	} else {
		p.draw(0, "")
	}
	return p
}

// set shows done out of total, with a note (e.g. the current rate).
func (p *progress) set(done float64, note string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done || !p.tty || time.Since(p.last) < 100*time.Millisecond {
		return
	}
	p.draw(done, note)
}

func (p *progress) draw(done float64, note string) {
	const width = 30
	frac := 0.0
	if p.total > 0 {
		frac = min(max(done/p.total, 0), 1)
	}
	n := int(frac * width)
	fmt.Fprintf(p.w, "\r\033[K[%s%s] %3.0f%% %-40s %5.1fs %s", strings.Repeat("#", n), strings.Repeat(".", width-n),
		100*frac, p.label, time.Since(p.start).Seconds(), note)
	p.last = time.Now()
}

// finish ends the bar with a summary note.
func (p *progress) finish(note string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return
	}
	p.done = true
	if p.tty {
		p.draw(p.total, note)
		fmt.Fprintln(p.w)
		return
	}
	fmt.Fprintf(p.w, "bench: %s: %s (%.1fs)\n", p.label, note, time.Since(p.start).Seconds())
}

// tick redraws p every 200 ms with done() until stop is closed.
func (p *progress) tick(stop <-chan struct{}, done func() (float64, string)) {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			d, note := done()
			p.set(d, note)
		}
	}
}
