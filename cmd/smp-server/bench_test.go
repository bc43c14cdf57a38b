package main_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/internal/smptest"
)

// BenchmarkServerFsync measures the relay end to end in each --fsync mode:
// every connection owns a secured queue it is subscribed to and repeats a
// signed SEND (answered OK, the message pushed back) and its ACK, each reply
// waiting for the log in mode always. One op is one SEND+ACK cycle: two
// logged commands. Client and server share the machine's cores. "memory" is
// --store memory, for reference: no log at all.
//
//	go test ./cmd/smp-server -run XXX -bench ServerFsync -benchtime 4000x
func BenchmarkServerFsync(b *testing.B) {
	for _, mode := range []string{"always", "interval", "never", "memory"} {
		for _, conns := range []int{1, 16, 128} {
			b.Run(fmt.Sprintf("%s/conns=%d", mode, conns), func(b *testing.B) {
				args := []string{"--fsync", mode}
				if mode == "memory" { // no log at all, for reference
					args = []string{"--store", "memory"}
				}
				s := smptest.StartServer(b, append(args, "--key-type", "x25519")...)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
				defer cancel()
				type client struct {
					c        *smptest.Conn
					rk, sk   *codec.Signer
					rid, sid []byte
				}
				cs := make([]*client, conns)
				for i := range cs {
					c, err := smptest.Dial(ctx, s.Addr, s.Fingerprint)
					if err != nil {
						b.Fatal(err)
					}
					defer c.Close()
					cl := &client{c: c}
					cl.rk, _ = codec.GenerateSigner(codec.SigEd25519, 0)
					cl.sk, _ = codec.GenerateSigner(codec.SigEd25519, 0)
					if err := c.Send(smptest.Cmd(cl.rk, "n", nil, codec.CmdNEW, cl.rk.PublicSPKI(), nil)); err != nil {
						b.Fatal(err)
					}
					r, err := c.Next(ctx)
					if err != nil || r.Cmd != codec.CmdIDS {
						b.Fatalf("NEW: %v %v", r, err)
					}
					cl.rid, cl.sid = r.RID, r.SID
					if err := c.Send(smptest.Cmd(cl.rk, "k", cl.rid, codec.CmdKEY, cl.sk.PublicSPKI(), nil)); err != nil {
						b.Fatal(err)
					}
					if r, err := c.Next(ctx); err != nil || r.Cmd != codec.CmdOK {
						b.Fatalf("KEY: %v %v", r, err)
					}
					cs[i] = cl
				}
				body := make([]byte, 256)
				var next atomic.Int64
				var failed atomic.Value
				var wg sync.WaitGroup
				b.ResetTimer()
				start := time.Now()
				for _, cl := range cs {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for next.Add(1) <= int64(b.N) {
							if err := cl.c.Send(smptest.Cmd(cl.sk, "s", cl.sid, codec.CmdSEND, nil, body)); err != nil {
								failed.Store(err)
								return
							}
							gotOK, gotMSG := false, false
							for !gotOK || !gotMSG {
								r, err := cl.c.Next(ctx)
								switch {
								case err != nil:
									failed.Store(err)
									return
								case r.Cmd == codec.CmdOK && r.CorrID == "s":
									gotOK = true
								case r.Cmd == codec.CmdMSG && r.CorrID == "":
									gotMSG = true
								default:
									failed.Store(fmt.Errorf("unexpected %v", r))
									return
								}
							}
							if err := cl.c.Send(smptest.Cmd(cl.rk, "a", cl.rid, codec.CmdACK, nil, nil)); err != nil {
								failed.Store(err)
								return
							}
							if r, err := cl.c.Next(ctx); err != nil || r.Cmd != codec.CmdOK {
								failed.Store(fmt.Errorf("ACK: %v %v", r, err))
								return
							}
						}
					}()
				}
				wg.Wait()
				elapsed := time.Since(start)
				b.StopTimer()
				if err := failed.Load(); err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(b.N)/elapsed.Seconds(), "cycles/s")
				b.ReportMetric(2*float64(b.N)/elapsed.Seconds(), "logged-cmds/s")
			})
		}
	}
}
