package engine

import (
	"fmt"
	"testing"

	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/internal/verifyprobe"
)

// TestCreatorKeys: who may create queues (SPEC §5 creation authorization,
// §11 --new-queues off). Each case sets the limits, then sends one NEW, by
// the single and the batched path; other commands on an existing queue work
// whatever the setting.
func TestCreatorKeys(t *testing.T) {
	for _, alg := range []codec.SigAlg{codec.SigEd25519, codec.SigRSA} {
		creator, other := signer(t, alg), signer(t, alg)
		ck := []*codec.VerifyKey{other.VerifyKey(), creator.VerifyKey()} // the signer is not the first tried
		rk := signer(t, alg)
		newTx := func(s *codec.Signer) []byte { return tx(t, s, "new", nil, codec.CmdNEW, rk.PublicSPKI(), nil) }
		stranger := signer(t, alg)
		for _, tc := range []struct {
			name string
			lim  Limits
			tx   []byte
			ok   bool
		}{
			{"open/unsigned", Limits{}, newTx(nil), true},
			{"open/own key", Limits{}, newTx(rk), true},
			{"open/other key", Limits{}, newTx(stranger), false},
			{"closed/unsigned", Limits{NewQueuesClosed: true}, newTx(nil), false},
			{"closed/own key", Limits{NewQueuesClosed: true}, newTx(rk), false},
			{"closed/creator key", Limits{NewQueuesClosed: true, CreatorKeys: ck}, newTx(creator), false},
			{"keys/unsigned", Limits{CreatorKeys: ck}, newTx(nil), false},
			{"keys/own key", Limits{CreatorKeys: ck}, newTx(rk), false},
			{"keys/unknown key", Limits{CreatorKeys: ck}, newTx(stranger), false},
			{"keys/creator key", Limits{CreatorKeys: ck}, newTx(creator), true},
			{"keys/creator key, other alg first", Limits{CreatorKeys: append([]*codec.VerifyKey{otherAlg(t, alg)}, ck...)}, newTx(creator), true},
			{"empty set/creator key", Limits{CreatorKeys: []*codec.VerifyKey{}}, newTx(creator), false},
		} {
			for _, batched := range []bool{false, true} {
				t.Run(fmt.Sprintf("%v/%s/batched=%v", alg, tc.name, batched), func(t *testing.T) {
					e, _ := newTestEngine(t, Limits{})
					q := newQueue(t, e, alg) // made while creation is open
					if err := e.SetLimits(tc.lim); err != nil {
						t.Fatal(err)
					}
					c := newConn(t, e)
					var rs []resp
					if batched {
						rs = doBatched(c, NewBatch(testBlock), 1000, tc.tx)
					} else {
						rs = c.Do(tc.tx)
					}
					if len(rs) != 1 {
						t.Fatalf("got %d replies: %+v", len(rs), rs)
					}
					if tc.ok {
						wantCmd(t, rs[0], codec.CmdIDS)
					} else {
						wantErr(t, rs[0], codec.ErrAuth)
					}
					// The existing queue works whatever the creation setting.
					sk := q.secure(t, alg)
					wantCmd(t, c.One(tx(t, sk, "send", q.sid, codec.CmdSEND, nil, []byte("hi"))), codec.CmdOK)
					if r := q.rc.Drain(); len(r) != 1 || r[0].Cmd != codec.CmdMSG {
						t.Fatalf("the subscriber got %+v, want one MSG", r)
					}
					wantCmd(t, q.rc.One(tx(t, q.rk, "ack", q.rid, codec.CmdACK, nil, nil)), codec.CmdOK)
					wantCmd(t, q.rc.One(tx(t, q.rk, "sub", q.rid, codec.CmdSUB, nil, nil)), codec.CmdOK)
				})
			}
		}
	}
}

// otherAlg returns a key of the other algorithm than alg.
func otherAlg(t *testing.T, alg codec.SigAlg) *codec.VerifyKey {
	if alg == codec.SigEd25519 {
		return signer(t, codec.SigRSA).VerifyKey()
	}
	return signer(t, codec.SigEd25519).VerifyKey()
}

// TestCreatorKeyReload: a key removed by SetLimits refuses the next NEW, a
// key added admits it, and reopening creation restores NEW for everyone.
func TestCreatorKeyReload(t *testing.T) {
	e, _ := newTestEngine(t, Limits{})
	a, b := signer(t, codec.SigEd25519), signer(t, codec.SigEd25519)
	c := newConn(t, e)
	newBy := func(s *codec.Signer) resp {
		return c.One(tx(t, s, "new", nil, codec.CmdNEW, signer(t, codec.SigEd25519).PublicSPKI(), nil))
	}
	set := func(l Limits) {
		t.Helper()
		if err := e.SetLimits(l); err != nil {
			t.Fatal(err)
		}
	}
	set(Limits{CreatorKeys: []*codec.VerifyKey{a.VerifyKey(), b.VerifyKey()}})
	wantCmd(t, newBy(a), codec.CmdIDS)
	wantCmd(t, newBy(b), codec.CmdIDS)
	set(Limits{CreatorKeys: []*codec.VerifyKey{b.VerifyKey()}})
	wantErr(t, newBy(a), codec.ErrAuth)
	wantCmd(t, newBy(b), codec.CmdIDS)
	set(Limits{NewQueuesClosed: true})
	wantErr(t, newBy(b), codec.ErrAuth)
	wantErr(t, newBy(nil), codec.ErrAuth)
	set(Limits{})
	wantCmd(t, newBy(nil), codec.CmdIDS)
	if err := e.SetLimits(Limits{CreatorKeys: []*codec.VerifyKey{nil}}); err == nil {
		t.Fatal("a nil creator key was accepted")
	}
	wantCmd(t, newBy(nil), codec.CmdIDS) // the limits in force stayed
}

// TestCreatorKeyCost: with creator keys, every NEW verifies against every
// key, one verification each of the algorithm and size its signature
// suggests, whichever key signed it or whether one did (SPEC §7); and it is
// charged that many units of work.
func TestCreatorKeyCost(t *testing.T) {
	for _, alg := range []codec.SigAlg{codec.SigEd25519, codec.SigRSA} {
		keys := []*codec.Signer{signer(t, alg), signer(t, alg), signer(t, alg)}
		var ck []*codec.VerifyKey
		for _, k := range keys {
			ck = append(ck, k.VerifyKey())
		}
		e, _ := newTestEngine(t, Limits{CreatorKeys: ck})
		rk := signer(t, alg)
		var want []verifyprobe.Verification
		for i, s := range []*codec.Signer{keys[0], keys[2], signer(t, alg), rk} {
			c := newConn(t, e)
			plain := block(tx(t, s, "new", nil, codec.CmdNEW, rk.PublicSPKI(), nil))
			var seen []verifyprobe.Verification
			stop := verifyprobe.Observe(func(v verifyprobe.Verification) { seen = append(seen, v) })
			budget := 100
			c.S.ProcessSome(plain, c.P, &c.Tr, c.W, &budget)
			stop()
			if len(seen) != len(ck) {
				t.Fatalf("%v, signer %d: %d verifications, want %d", alg, i, len(seen), len(ck))
			}
			if want == nil {
				want = seen
			}
			if fmt.Sprint(seen) != fmt.Sprint(want) {
				t.Fatalf("%v, signer %d verified %v, signer 0 %v", alg, i, seen, want)
			}
			charged := 100 - budget
			if granted := i < 2; granted && charged != len(ck) || !granted && charged != len(ck)+authPenalty {
				t.Errorf("%v, signer %d: charged %d units", alg, i, charged)
			}
		}
	}
}
