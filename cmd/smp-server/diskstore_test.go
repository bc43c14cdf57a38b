package main_test

import (
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/internal/smptest"
)

// Issue 14: with the disk store a relay holding more message bytes than it
// may use in RAM fills up to --max-stored-bytes (SEND then gets ERR QUOTA,
// SUB and ACK go on), restarts, and delivers every body, byte for byte, with
// a peak RSS far below what the wal store, which keeps bodies in RAM, needs
// for the same work. Both relays run in this test, so the comparison is a
// ratio within one run (the race detector's shadow memory scales both).
func TestDiskStoreBeyondRAM(t *testing.T) {
	if testing.Short() {
		t.Skip("fills two relays with 48 MiB each")
	}
	const (
		bodySize = 7168
		count    = 48 << 20 / bodySize // 48 MiB of bodies
		capBytes = count * bodySize    // --max-stored-bytes: exactly what is stored
	)
	body := func(i int) []byte {
		b := make([]byte, bodySize)
		r := rand.New(rand.NewPCG(uint64(i), 14)) // incompressible, and known again at delivery
		for j := range b {
			b[j] = byte(r.Uint32())
		}
		return b
	}
	peak := map[string]int{}
	for _, st := range []string{"disk", "wal"} {
		t.Run(st, func(t *testing.T) {
			ctx := smptest.Guard(t) // thousands of round trips: under -race and load they outlast hangGuard; the test deadline bounds a hang
			dir := t.TempDir()
			args := []string{"--key-type", "x25519", "--store", st, "--fsync", "never", "--quota", strconv.Itoa(count + 1),
				"--max-stored-bytes", strconv.Itoa(capBytes), "--cache-size", "1048576"}
			s := smptest.StartServerIn(t, dir, args...)
			rc, sc := dial(t, ctx, s), dial(t, ctx, s)
			rk := newSigner(t, codec.SigEd25519)
			rid, sid := newQueue(t, ctx, rc, rk, false)
			for i := 0; i < count; i += 64 {
				var txs [][]byte
				for j := i; j < min(i+64, count); j++ {
					txs = append(txs, smptest.Cmd(nil, "s", sid, codec.CmdSEND, nil, body(j)))
				}
				send(t, sc, txs...)
				for _, r := range collect(t, ctx, sc, len(txs)) {
					if r.Cmd != codec.CmdOK {
						t.Fatalf("SEND below the cap: %v", r)
					}
				}
			}
			send(t, sc, smptest.StringSend("full", sid, "x"))
			expect(t, ctx, sc, errResp("full", sid, codec.ErrQuota))
			if s.Stop() != 0 {
				t.Fatalf("stop: %s", s.Stderr())
			}

			// Restart: the recipient drains everything; one ACK in, SEND
			// works again, since acknowledged bytes leave the count.
			s = smptest.StartServerWith(t, smptest.Launch{Dir: dir, Args: args, Env: []string{"GOMEMLIMIT=16MiB"}})
			rc, sc = dial(t, ctx, s), dial(t, ctx, s)
			send(t, rc, smptest.Cmd(rk, "sub", rid, codec.CmdSUB, nil, nil))
			expectMSG(t, ctx, rc, "sub", rid, body(0))
			send(t, rc, smptest.Cmd(rk, "ack", rid, codec.CmdACK, nil, nil))
			expectMSG(t, ctx, rc, "ack", rid, body(1))
			send(t, sc, smptest.StringSend("again", sid, "x"))
			expect(t, ctx, sc, ok("again", sid))
			for i := 2; i < count; i++ {
				send(t, rc, smptest.Cmd(rk, "ack", rid, codec.CmdACK, nil, nil))
				r := expect(t, ctx, rc, want{Cmd: codec.CmdMSG, Corr: "ack", Queue: rid})
				if string(r.Body) != string(body(i)) {
					t.Fatalf("message %d after the restart: body differs", i)
				}
			}
			send(t, rc, smptest.Cmd(rk, "ack", rid, codec.CmdACK, nil, nil))
			expectMSG(t, ctx, rc, "ack", rid, []byte("x"))
			peak[st] = peakRSSKiB(t, s)
		})
	}
	t.Logf("peak RSS after restart and drain of %d MiB: disk %d KiB, wal %d KiB", capBytes>>20, peak["disk"], peak["wal"])
	if peak["disk"] == 0 || peak["wal"] == 0 {
		t.Fatal("a store's run failed")
	}
	if peak["disk"]*2 > peak["wal"] {
		t.Fatalf("disk store peak RSS %d KiB is over half the wal store's %d KiB: bodies are held in RAM", peak["disk"], peak["wal"])
	}
}

// peakRSSKiB reads the server's peak resident set size since it started.
func peakRSSKiB(t *testing.T, s *smptest.Server) int { return procStatusKiB(t, s, "VmHWM") }
