package engine

import (
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"github.com/smprelay/smprelay/codec"
)

// TestAuthTiming checks SPEC §7: ERR AUTH for a queue that does not exist
// costs the same as ERR AUTH for a wrong signature on a real queue. Means of
// at least 100 interleaved tries each must be within 20% of each other; the
// comparison is a ratio within one run, so a slow machine does not matter, and
// a noisy run is retried.
func TestAuthTiming(t *testing.T) {
	if testing.Short() {
		t.Skip("timing comparison skipped in -short mode")
	}
	for _, alg := range []codec.SigAlg{codec.SigEd25519, codec.SigRSA} {
		e, _ := newTestEngine(t, Limits{})
		q := newQueue(t, e, alg)
		wrong := signer(t, alg)
		sk := q.secure(t, alg)
		missing := make([]byte, 16)
		rand.Read(missing)

		// Every command that can fail with AUTH, on a real queue with a wrong
		// signature against a missing queue (or an ID of the wrong kind).
		type pair struct {
			name         string
			real, absent []byte
		}
		var cases []pair
		for _, c := range []struct {
			cmd  codec.Cmd
			key  []byte
			body []byte
		}{
			{codec.CmdSUB, nil, nil}, {codec.CmdKEY, sk.PublicSPKI(), nil}, {codec.CmdACK, nil, nil},
			{codec.CmdOFF, nil, nil}, {codec.CmdDEL, nil, nil},
		} {
			cases = append(cases, pair{c.cmd.String(),
				tx(t, wrong, "a", q.rid, c.cmd, c.key, c.body), tx(t, wrong, "a", missing, c.cmd, c.key, c.body)})
		}
		cases = append(cases,
			pair{"SEND", tx(t, wrong, "a", q.sid, codec.CmdSEND, nil, []byte("x")), tx(t, wrong, "a", missing, codec.CmdSEND, nil, []byte("x"))},
			pair{"SEND-unsigned", tx(t, nil, "a", q.sid, codec.CmdSEND, nil, []byte("x")), tx(t, nil, "a", missing, codec.CmdSEND, nil, []byte("x"))},
			pair{"SEND-wrong-kind", tx(t, wrong, "a", q.sid, codec.CmdSEND, nil, []byte("x")), tx(t, wrong, "a", q.rid, codec.CmdSEND, nil, []byte("x"))},
			pair{"SUB-wrong-kind", tx(t, wrong, "a", q.rid, codec.CmdSUB, nil, nil), tx(t, wrong, "a", q.sid, codec.CmdSUB, nil, nil)},
		)
		for _, tc := range cases {
			t.Run(fmt.Sprintf("%v/%s", alg, tc.name), func(t *testing.T) {
				c := newConn(t, e)
				wantErr(t, c.One(tc.real), codec.ErrAuth)
				wantErr(t, c.One(tc.absent), codec.ErrAuth)
				const tries, attempts = 200, 5
				var ratio float64
				for range attempts {
					var real, absent time.Duration
					for i := range 2 * tries {
						b := tc.real
						if i%2 == 1 {
							b = tc.absent
						}
						plain := block(b)
						start := time.Now()
						c.S.Process(plain, c.P, &c.Tr, c.W)
						d := time.Since(start)
						if i%2 == 0 {
							real += d
						} else {
							absent += d
						}
						c.W.Finish()
						c.Blocks = c.Blocks[:0]
					}
					ratio = float64(absent) / float64(real)
					if ratio > 1/1.2 && ratio < 1.2 {
						t.Logf("absent/real mean time ratio %.3f (mean real %v)", ratio, real/tries)
						return
					}
				}
				t.Fatalf("ERR AUTH for a missing queue took %.2fx the time of a wrong signature (want within 20%%)", ratio)
			})
		}
	}
}
