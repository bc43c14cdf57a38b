package codec

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"testing"
)

type batchCase struct {
	k        *VerifyKey
	msg, sig []byte
}

// edBatch returns n entries signed by n keys over messages of size bytes.
func edBatch(t testing.TB, n, size int) []batchCase {
	t.Helper()
	out := make([]batchCase, n)
	for i := range out {
		s, err := GenerateSigner(SigEd25519, 0)
		if err != nil {
			t.Fatal(err)
		}
		msg := make([]byte, size)
		rand.Read(msg)
		sig, _ := s.Sign(msg)
		out[i] = batchCase{s.VerifyKey(), msg, sig}
	}
	return out
}

// runBatch adds cases to b (after a Reset) and checks each result against
// VerifyTimingSafe.
func runBatch(t *testing.T, b *BatchVerifier, cases []batchCase) []bool {
	t.Helper()
	b.Reset()
	for i, c := range cases {
		if j := b.Add(c.k, c.msg, c.sig); j != i {
			t.Fatalf("Add returned %d, want %d", j, i)
		}
	}
	if b.Len() != len(cases) {
		t.Fatalf("Len = %d", b.Len())
	}
	res := b.Verify()
	if len(res) != len(cases) {
		t.Fatalf("%d results for %d entries", len(res), len(cases))
	}
	for i, c := range cases {
		if want := VerifyTimingSafe(c.k, c.msg, c.sig); res[i] != want {
			t.Fatalf("entry %d: batch %v, VerifyTimingSafe %v", i, res[i], want)
		}
	}
	return res
}

func TestBatchAllValid(t *testing.T) {
	var b BatchVerifier
	for _, n := range []int{0, 1, 2, 7, 8, 64, 65, 130} {
		cases := edBatch(t, n, 100)
		for i, ok := range runBatch(t, &b, cases) {
			if !ok {
				t.Fatalf("n=%d: entry %d failed", n, i)
			}
		}
	}
}

// TestBatchFindsBadOnes puts bad entries at various places in batches and
// checks that exactly those fail.
func TestBatchFindsBadOnes(t *testing.T) {
	var b BatchVerifier
	rs := rsaSigner(t)
	for _, n := range []int{2, 8, 64, 100} {
		for _, bad := range [][]int{{0}, {n - 1}, {n / 2}, {0, n - 1}, {1, 3, 5}, nil} {
			t.Run(fmt.Sprintf("n=%d/bad=%v", n, bad), func(t *testing.T) {
				cases := edBatch(t, n, 64)
				isBad := make([]bool, n)
				for j, i := range bad {
					if i >= n {
						continue
					}
					isBad[i] = true
					c := &cases[i]
					switch j % 4 {
					case 0: // a flipped bit in S
						c.sig = bytes.Clone(c.sig)
						c.sig[40] ^= 4
					case 1: // a queue that does not exist
						c.k = nil
					case 2: // another key's signature
						c.k = cases[(i+1)%n].k
					case 3: // a wrong message
						c.msg = append(bytes.Clone(c.msg), 0)
					}
				}
				res := runBatch(t, &b, cases)
				for i := range res {
					if res[i] == isBad[i] {
						t.Errorf("entry %d: result %v, bad %v", i, res[i], isBad[i])
					}
				}
			})
		}
	}

	// Mixed kinds: RSA entries, wrong lengths, undecodable signatures.
	msg := []byte(vectorSigned)
	rsig, _ := rs.Sign(msg)
	cases := edBatch(t, 6, 32)
	cases = append(cases,
		batchCase{rs.VerifyKey(), msg, rsig},                       // valid RSA
		batchCase{nil, msg, rsig},                                  // RSA size, no queue
		batchCase{rs.VerifyKey(), msg, cases[0].sig},               // Ed25519 sig, RSA key
		batchCase{cases[0].k, msg, rsig},                           // RSA sig, Ed25519 key
		batchCase{cases[1].k, msg, nil},                            // empty
		batchCase{nil, msg, []byte("odd")},                         // odd length, no queue
		batchCase{cases[2].k, msg, make([]byte, 64)},               // zeros: S canonical, R = 0 decodes
		batchCase{cases[3].k, msg, bytes.Repeat([]byte{0xff}, 64)}, // S not canonical
	)
	want := []bool{true, true, true, true, true, true, true, false, false, false, false, false, false, false}
	res := runBatch(t, &b, cases)
	for i := range want {
		if res[i] != want[i] {
			t.Errorf("mixed entry %d: %v, want %v", i, res[i], want[i])
		}
	}
}

// TestBatchReuse checks that a BatchVerifier gives the same answers across
// Reset and keeps no state from one batch to the next.
func TestBatchReuse(t *testing.T) {
	var b BatchVerifier
	good := edBatch(t, 16, 10)
	for round := range 4 {
		cases := append([]batchCase(nil), good...)
		if round%2 == 1 {
			cases[round] = batchCase{nil, cases[round].msg, cases[round].sig}
		}
		res := runBatch(t, &b, cases)
		for i, ok := range res {
			if want := !(round%2 == 1 && i == round); ok != want {
				t.Fatalf("round %d entry %d: %v", round, i, ok)
			}
		}
	}
}

func TestBatchAllocs(t *testing.T) {
	var b BatchVerifier
	for _, n := range []int{8, 64, 100} {
		cases := edBatch(t, n, 7200)
		badCases := append([]batchCase(nil), cases...)
		badCases[n/2].k = nil
		for _, cs := range [][]batchCase{cases, badCases} {
			run := func() {
				b.Reset()
				for _, c := range cs {
					b.Add(c.k, c.msg, c.sig)
				}
				b.Verify()
			}
			run() // warm-up: scratch grows to size
			if a := testing.AllocsPerRun(5, run); a != 0 {
				t.Errorf("n=%d: Reset+Add+Verify allocates %v times", n, a)
			}
		}
	}
}

// TestBatchTimingSafe compares, within one run, a batch holding one entry for
// a queue that does not exist with one holding a wrong signature for a queue
// that does (SPEC §7): both fall back, and must cost the same.
func TestBatchTimingSafe(t *testing.T) {
	if testing.Short() {
		t.Skip("timing test")
	}
	const n = 8
	cases := edBatch(t, n, 7200)
	wrong := append([]batchCase(nil), cases...)
	wrong[3].sig = bytes.Clone(wrong[3].sig)
	wrong[3].sig[40] ^= 1
	absent := append([]batchCase(nil), wrong...)
	absent[3].k = nil
	var b BatchVerifier
	run := func(cs []batchCase) func() {
		return func() {
			b.Reset()
			for _, c := range cs {
				b.Add(c.k, c.msg, c.sig)
			}
			b.Verify()
		}
	}
	run(absent)()
	var r float64
	for range 3 {
		if r = medianRatio(61, run(absent), run(wrong)); r > 1/1.2 && r < 1.2 {
			break
		}
	}
	t.Logf("absent/wrong batch median ratio %.3f", r)
	if r <= 1/1.2 || r >= 1.2 {
		t.Errorf("absent/wrong batch median ratio %.2f outside 1/1.2..1.2", r)
	}
}

// BenchmarkBatchVerify7200 reports the cost per signature of verifying
// batches of 8 and 64 Ed25519 signatures over 7,200-byte messages, of a
// batch of 64 with one bad signature (which falls back), and of a batch of
// 64 whose keys are not in the decoded-key cache (cold: the cache turned
// off, so each key is decoded).
func BenchmarkBatchVerify7200(b *testing.B) {
	for _, tc := range []struct {
		n         int
		bad, cold bool
	}{{8, false, false}, {64, false, false}, {64, true, false}, {64, false, true}} {
		name := fmt.Sprintf("%d", tc.n)
		if tc.bad {
			name += "-one-bad"
		}
		if tc.cold {
			name += "-cold"
		}
		b.Run(name, func(b *testing.B) {
			cases := edBatch(b, tc.n, 7200)
			if tc.bad {
				cases[0].k = nil
			}
			if tc.cold {
				SetKeyCacheSize(0)
				b.Cleanup(func() { SetKeyCacheSize(DefaultKeyCacheSize) })
			}
			var v BatchVerifier
			b.ReportAllocs()
			for b.Loop() {
				v.Reset()
				for _, c := range cases {
					v.Add(c.k, c.msg, c.sig)
				}
				res := v.Verify()
				if !tc.bad && !res[0] {
					b.Fatal("no verify")
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*tc.n), "ns/sig")
		})
	}
}
