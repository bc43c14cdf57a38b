package codec

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"testing"

	"filippo.io/edwards25519"
	"github.com/oasisprotocol/curve25519-voi/curve"
	"github.com/oasisprotocol/curve25519-voi/curve/scalar"
)

// edTestKey is an Ed25519 key with its secret scalar, so tests can make
// signatures crypto/ed25519.Sign never would: with a chosen R, or under a
// public key with a small-order component.
type edTestKey struct {
	priv ed25519.PrivateKey
	a    edwards25519.Scalar // secret scalar
	A    edwards25519.Point
	pub  []byte
}

func newEdTestKey(t testing.TB, seed []byte) *edTestKey {
	t.Helper()
	k := &edTestKey{priv: ed25519.NewKeyFromSeed(seed)}
	h := sha512.Sum512(seed)
	if _, err := k.a.SetBytesWithClamping(h[:32]); err != nil {
		t.Fatal(err)
	}
	k.A.ScalarBaseMult(&k.a)
	k.pub = k.A.Bytes()
	if !bytes.Equal(k.pub, k.priv.Public().(ed25519.PublicKey)) {
		t.Fatal("secret scalar does not match crypto/ed25519's key")
	}
	return k
}

// signWith signs msg with R = [r]B + tR encoded as rEnc (nil for the
// canonical encoding), under the public key encoding pub (the hash input). It
// returns the signature; S = r + k·a, and r is derived from the key and the
// inputs, so that a fuzz input always makes the same signature.
func (k *edTestKey) signWith(pub []byte, msg []byte, tR *edwards25519.Point, rEnc []byte) []byte {
	h := sha512.New()
	h.Write(k.priv.Seed())
	h.Write(pub)
	h.Write(msg)
	if tR != nil {
		h.Write(tR.Bytes())
	}
	var r edwards25519.Scalar
	r.SetUniformBytes(h.Sum(nil))
	var R edwards25519.Point
	R.ScalarBaseMult(&r)
	if tR != nil {
		R.Add(&R, tR)
	}
	if rEnc == nil {
		rEnc = R.Bytes()
	}
	var kk, s edwards25519.Scalar
	edChallengeRef(&kk, rEnc, pub, msg)
	s.MultiplyAdd(&kk, &k.a, &r)
	return append(bytes.Clone(rEnc), s.Bytes()...)
}

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// edOrder8 is a point of order 8; its multiples are the whole torsion
// subgroup.
var edOrder8 = mustHex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05")

// torsion returns [i]T8 for i in 0..7.
func torsion(t testing.TB, i int) *edwards25519.Point {
	t.Helper()
	var t8 edwards25519.Point
	if _, err := t8.SetBytes(edOrder8); err != nil {
		t.Fatal(err)
	}
	p := edwards25519.NewIdentityPoint()
	for range i % 8 {
		p.Add(p, &t8)
	}
	return p
}

// smallOrderEncodings returns every encoding, canonical or not, of a point
// of order dividing 8.
func smallOrderEncodings(t testing.TB) [][]byte {
	t.Helper()
	var out [][]byte
	p := mustHex("edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f") // p, little-endian
	for i := range 8 {
		enc := torsion(t, i).Bytes()
		out = append(out, enc)
		var yy [32]byte
		copy(yy[:], enc)
		yy[31] &= 0x7f
		var zero [32]byte
		x0 := bytes.Equal(enc[:31], []byte{1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}) ||
			bytes.Equal(enc[1:31], p[1:31]) && enc[0] == 0xec // y = ±1: x = 0
		if x0 {
			neg := bytes.Clone(enc) // x = −0
			neg[31] |= 0x80
			out = append(out, neg)
		}
		// y + p, when that still fits in 255 bits (y < 19); the two points
		// with y = 0 share these.
		if bytes.Equal(yy[1:], zero[1:]) && yy[0] < 19 && enc[31]&0x80 == 0 {
			for _, sign := range []byte{0, 0x80} {
				e := bytes.Clone(p)
				e[0] += yy[0]
				e[31] |= sign
				out = append(out, e)
			}
		}
	}
	return out
}

// ruleDifference names the ZIP-215 rule under which the relay accepts a
// signature crypto/ed25519 rejects, or returns "" if none applies: then the
// two must agree. It is the reference the differential tests hold the relay's
// verifier (curve25519-voi) to, written on another library
// (filippo.io/edwards25519): a rule applies only if the cofactored equation
// [8]([S]B − [k]A − R) = 0 holds with A and R decoded permissively and S
// canonical.
func ruleDifference(pub, msg, sig []byte) string {
	if len(pub) != 32 || len(sig) != 64 {
		return ""
	}
	var A, R edwards25519.Point
	var S, k edwards25519.Scalar
	if _, err := A.SetBytes(pub); err != nil {
		return ""
	}
	if _, err := R.SetBytes(sig[:32]); err != nil {
		return ""
	}
	if _, err := S.SetCanonicalBytes(sig[32:]); err != nil {
		return ""
	}
	edChallengeRef(&k, sig[:32], pub, msg)
	var negA, res, res8 edwards25519.Point
	negA.Negate(&A)
	res.VarTimeDoubleScalarBaseMult(&k, &negA, &S)
	res.Subtract(&res, &R)
	if res8.MultByCofactor(&res).Equal(edwards25519.NewIdentityPoint()) == 0 {
		return "" // the cofactored equation fails: nothing may accept it
	}
	if !bytes.Equal(R.Bytes(), sig[:32]) {
		return "non-canonical R"
	}
	if res.Equal(edwards25519.NewIdentityPoint()) == 0 {
		return "small-order component (cofactored equation)"
	}
	return ""
}

// edChallengeRef is edChallenge on filippo.io/edwards25519's scalars, for
// the reference checks: k = SHA-512(R ‖ A ‖ M) mod ℓ.
func edChallengeRef(k *edwards25519.Scalar, r, a, msg []byte) {
	h := sha512.New()
	h.Write(r)
	h.Write(a)
	h.Write(msg)
	k.SetUniformBytes(h.Sum(nil)) // 64 bytes: cannot fail
}

// zip215Only reports whether got (the relay) and want (crypto/ed25519)
// differ in the one way the package documentation allows: the relay accepts
// a signature crypto/ed25519 rejects, for a reason ruleDifference names.
func zip215Only(pub, msg, sig []byte, got, want bool) bool {
	return got && !want && ruleDifference(pub, msg, sig) != ""
}

// edKeyFromRaw returns a VerifyKey for 32 raw bytes, through the SPKI path.
func edKeyFromRaw(t testing.TB, pub []byte) *VerifyKey {
	t.Helper()
	der := append(mustHex("302a300506032b6570032100"), pub...)
	k, err := ParseVerifyKey(der)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// edBad reports whether k's bytes are not a curve point (nothing verifies
// under such a key).
func edBad(k *VerifyKey) bool {
	var p edPoint
	p.decode(&k.ed)
	return p.bad
}

// verifyBatched verifies one entry inside a batch of valid signatures and
// returns its result, checking that the other entries verified.
func verifyBatched(t testing.TB, k *VerifyKey, msg, sig []byte) bool {
	t.Helper()
	var b BatchVerifier
	s := vectorSigner(t)
	fill := func(n int) {
		for i := range n {
			m := []byte{'f', byte(i)}
			fs, _ := s.Sign(m)
			b.Add(s.VerifyKey(), m, fs)
		}
	}
	fill(3)
	i := b.Add(k, msg, sig)
	fill(3)
	res := b.Verify()
	for j, ok := range res {
		if j != i && !ok {
			t.Fatalf("batch: valid entry %d failed", j)
		}
	}
	return res[i]
}

// TestVectorsVerify checks vectors.md §1 and §7 against Verify,
// VerifyTimingSafe and a batch.
func TestVectorsVerify(t *testing.T) {
	der, _ := base64.StdEncoding.DecodeString("MCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=")
	k, err := ParseVerifyKey(der)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []struct{ name, signed, sig string }{
		{"§1", vectorSigned, "urDey9pb1iyyauNUI6z+tBWsOKO7HouCS+kXRnS+ciWP4pPf/LcjUt2+Jt1BjH93XzaWuYVFm3pJzeJ0ZGSeDw=="},
		{"§7", string(mustHex("534d5020653265207631207369670102030405060708090a0b0c0d0e0f10000000000000000168656c6c6f")),
			"OHT8iw2aqwrcPGWxK/h0W1osqVEWo4Iy6hltX4RAkaCSmFeVjT3J2hqw2FzzMLlCHWX/8pIu9kkpUBrDy7jXAQ=="},
	} {
		sig, _ := base64.StdEncoding.DecodeString(v.sig)
		msg := []byte(v.signed)
		if !k.Verify(msg, sig) || !VerifyTimingSafe(k, msg, sig) || !verifyBatched(t, k, msg, sig) {
			t.Errorf("vectors.md %s: signature does not verify", v.name)
		}
		if !ed25519.Verify(k.ed[:], msg, sig) {
			t.Errorf("vectors.md %s: crypto/ed25519 rejects it", v.name)
		}
	}
}

// TestVerifyAgreesWithStdlib checks signatures made by crypto/ed25519 over
// many keys and lengths, up to a 7,200-byte message, each also with every
// bit of the signature flipped one at a time.
func TestVerifyAgreesWithStdlib(t *testing.T) {
	msg := make([]byte, 7200)
	rand.Read(msg)
	for i := range 40 {
		pub, priv, _ := ed25519.GenerateKey(rand.Reader)
		k := edKeyFromRaw(t, pub)
		m := msg[:i*i*4]
		sig := ed25519.Sign(priv, m)
		if !k.Verify(m, sig) {
			t.Fatalf("key %d: crypto/ed25519's signature over %d bytes does not verify", i, len(m))
		}
		if i%8 != 0 {
			continue
		}
		for bit := range 512 {
			bad := bytes.Clone(sig)
			bad[bit/8] ^= 1 << (bit % 8)
			want := ed25519.Verify(pub, m, bad)
			if got := k.Verify(m, bad); got != want && ruleDifference(pub, m, bad) == "" {
				t.Fatalf("bit %d flipped: Verify %v, crypto/ed25519 %v", bit, got, want)
			}
		}
	}
}

// TestVerifyRejects lists signatures both rule sets reject.
func TestVerifyRejects(t *testing.T) {
	key := newEdTestKey(t, bytes.Repeat([]byte{7}, 32))
	k := edKeyFromRaw(t, key.pub)
	msg := []byte(vectorSigned)
	good := ed25519.Sign(key.priv, msg)
	mod := func(f func(s []byte)) []byte { s := bytes.Clone(good); f(s); return s }
	ell := mustHex("edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010") // ℓ, little-endian
	sPlusL := mod(func(s []byte) {
		var c uint16
		for i := range 32 {
			c += uint16(s[32+i]) + uint16(ell[i])
			s[32+i] = byte(c)
			c >>= 8
		}
	})
	notOnCurve := mustHex("0200000000000000000000000000000000000000000000000000000000000000") // y = 2: x² is not a square
	for _, tc := range []struct {
		name     string
		msg, sig []byte
	}{
		{"S + ℓ (non-canonical S)", msg, sPlusL},
		{"S = ℓ", msg, append(bytes.Clone(good[:32]), ell...)},
		{"S all ones", msg, mod(func(s []byte) { copy(s[32:], bytes.Repeat([]byte{0xff}, 32)) })},
		{"R not on the curve", msg, mod(func(s []byte) { copy(s[:32], notOnCurve) })},
		{"R zeroed", msg, mod(func(s []byte) { clear(s[:32]) })},
		{"S zeroed", msg, mod(func(s []byte) { clear(s[32:]) })},
		{"all zero", msg, make([]byte, 64)},
		{"all ones", msg, bytes.Repeat([]byte{0xff}, 64)},
		{"R sign bit flipped", msg, mod(func(s []byte) { s[31] ^= 0x80 })},
		{"other message", []byte("other"), good},
		{"empty message", nil, good},
		{"R of small order, S = 0", msg, append(torsion(t, 1).Bytes(), make([]byte, 32)...)},
		{"63 bytes", msg, good[:63]},
		{"65 bytes", msg, append(bytes.Clone(good), 0)},
		{"R and S swapped", msg, append(bytes.Clone(good[32:]), good[:32]...)},
	} {
		if k.Verify(tc.msg, tc.sig) || VerifyTimingSafe(k, tc.msg, tc.sig) || verifyBatched(t, k, tc.msg, tc.sig) {
			t.Errorf("%s: accepted", tc.name)
		}
		if ed25519.Verify(key.pub, tc.msg, tc.sig) {
			t.Errorf("%s: crypto/ed25519 accepts it", tc.name)
		}
	}
	if !k.Verify(msg, good) {
		t.Fatal("the good signature does not verify")
	}

	// A public key that is not a curve point parses, as before, and nothing
	// verifies under it.
	bad := edKeyFromRaw(t, notOnCurve)
	if !edBad(bad) || bad.Verify(msg, good) || VerifyTimingSafe(bad, msg, good) || verifyBatched(t, bad, msg, good) {
		t.Error("key off the curve: not marked bad, or something verifies")
	}
}

// TestVerifyRuleDifferences makes one signature of each kind on which the
// relay's ZIP-215 rules and crypto/ed25519 differ, and checks that the
// relay accepts it on both paths, crypto/ed25519 rejects it, and
// ruleDifference names it. Each one takes the private key.
func TestVerifyRuleDifferences(t *testing.T) {
	key := newEdTestKey(t, bytes.Repeat([]byte{9}, 32))
	k := edKeyFromRaw(t, key.pub)
	msg := []byte("SEND with a signature only its key's owner can make")

	type diff struct {
		name, rule string
		key        *VerifyKey
		pub, sig   []byte
	}
	var cases []diff
	for i := 1; i < 8; i++ {
		cases = append(cases, diff{"R + T (order of T divides 8), i=" + string(rune('0'+i)), "small-order component (cofactored equation)",
			k, key.pub, key.signWith(key.pub, msg, torsion(t, i), nil)})
	}

	// A mixed-order public key A + T: k·T ≠ 0 for most k.
	for n, i := 0, 0; n < 3; i++ {
		// signWith is deterministic: vary the key's torsion until k·T ≠ 0.
		var mixed edwards25519.Point
		mixed.Add(&key.A, torsion(t, 1+i%7))
		mixedPub := mixed.Bytes()
		sig := key.signWith(mixedPub, msg, nil, nil)
		if ed25519.Verify(mixedPub, msg, sig) {
			continue // k·T = 0: both accept
		}
		cases = append(cases, diff{"A + T (mixed-order key)", "small-order component (cofactored equation)", edKeyFromRaw(t, mixedPub), mixedPub, sig})
		n++
	}

	// R of small order (so S = k·a), in each non-canonical encoding of such a
	// point: y + p for y < 19, or x = −0.
	var zero edwards25519.Scalar
	for _, r := range smallOrderEncodings(t) {
		var R edwards25519.Point
		if _, err := R.SetBytes(r); err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(R.Bytes(), r) {
			continue // canonical
		}
		var kk, s edwards25519.Scalar
		edChallengeRef(&kk, r, key.pub, msg)
		s.MultiplyAdd(&kk, &key.a, &zero)
		cases = append(cases, diff{"R of small order encoded " + hex.EncodeToString(r), "non-canonical R", k, key.pub, append(r, s.Bytes()...)})
	}
	if len(cases) != 7+3+6 {
		t.Fatalf("%d cases, want 16", len(cases))
	}

	for _, tc := range cases {
		if ed25519.Verify(tc.pub, msg, tc.sig) {
			t.Errorf("%s: crypto/ed25519 accepts it", tc.name)
		}
		if !tc.key.Verify(msg, tc.sig) || !VerifyTimingSafe(tc.key, msg, tc.sig) || !verifyBatched(t, tc.key, msg, tc.sig) {
			t.Errorf("%s: the relay rejects it", tc.name)
		}
		if got := ruleDifference(tc.pub, msg, tc.sig); got != tc.rule {
			t.Errorf("%s: ruleDifference = %q, want %q", tc.name, got, tc.rule)
		}
	}

	// The canonical encoding of the identity as R is a signature under both.
	var kk, s edwards25519.Scalar
	r := edwards25519.NewIdentityPoint().Bytes()
	edChallengeRef(&kk, r, key.pub, msg)
	s.MultiplyAdd(&kk, &key.a, &zero)
	sig := append(r, s.Bytes()...)
	if !ed25519.Verify(key.pub, msg, sig) || !k.Verify(msg, sig) {
		t.Error("R = identity, canonical: want accepted by both")
	}
}

// TestVerifyWeakKeys checks public keys of small order, canonical or not:
// both rule sets decode them alike and both admit forgeries under them (a
// signer who picks such a key gives up its own queue), and where they
// differ it is by a named rule.
func TestVerifyWeakKeys(t *testing.T) {
	msg := []byte(vectorSigned)
	var s edwards25519.Scalar
	s.SetUniformBytes(bytes.Repeat([]byte{3}, 64))
	var sB edwards25519.Point
	sB.ScalarBaseMult(&s)
	forged := append(sB.Bytes(), s.Bytes()...) // R = [S]B: [k]A vanishes for A = identity
	for _, pub := range smallOrderEncodings(t) {
		k := edKeyFromRaw(t, pub)
		if edBad(k) {
			t.Errorf("%x: small-order encoding does not decode", pub)
			continue
		}
		got, want := k.Verify(msg, forged), ed25519.Verify(pub, msg, forged)
		if got != want && ruleDifference(pub, msg, forged) == "" {
			t.Errorf("%x: Verify %v, crypto/ed25519 %v, no named rule", pub, got, want)
		}
		if got != verifyBatched(t, k, msg, forged) {
			t.Errorf("%x: batch and single differ", pub)
		}
	}
}

// TestEdDecodePoint checks the decoder (curve25519-voi's) against
// filippo.io/edwards25519's Point.SetBytes, which decodes as ZIP-215 says, on
// every small-order encoding (in every non-canonical form) and on random
// bytes: the same encodings decode, to the same point.
func TestEdDecodePoint(t *testing.T) {
	encs := smallOrderEncodings(t)
	for range 2000 {
		b := make([]byte, 32)
		rand.Read(b)
		encs = append(encs, b)
	}
	encs = append(encs, bytes.Repeat([]byte{0xff}, 32), make([]byte, 32), mustHex(ed25519BasepointHex))
	decoded := 0
	for _, enc := range encs {
		var want edwards25519.Point
		var got curve.EdwardsPoint
		_, err := want.SetBytes(enc)
		ok := edDecodePoint(&got, enc)
		var gotEnc curve.CompressedEdwardsY
		gotEnc.SetEdwardsPoint(&got)
		if ok != (err == nil) || ok && !bytes.Equal(gotEnc[:], want.Bytes()) {
			t.Fatalf("%x: edDecodePoint %v, SetBytes %v", enc, ok, err)
		}
		if ok {
			decoded++
		}
	}
	if decoded < 900 {
		t.Errorf("only %d of %d decoded", decoded, len(encs))
	}
}

const ed25519BasepointHex = "5866666666666666666666666666666666666666666666666666666666666666"

// TestDummyEdSigDecodes keeps the odd-length dummy path a full verification:
// its R must decode and its S be canonical, or it would fail early.
func TestDummyEdSigDecodes(t *testing.T) {
	var r curve.EdwardsPoint
	var s scalar.Scalar
	if !edParseSig(&r, &s, dummyEdSig[:]) {
		t.Fatal("dummyEdSig does not decode")
	}
}

func TestVerifyAllocsEd25519(t *testing.T) {
	s := vectorSigner(t)
	k := s.VerifyKey()
	msg := make([]byte, 7200)
	sig, _ := s.Sign(msg)
	bad := bytes.Clone(sig)
	bad[5] ^= 1
	if n := testing.AllocsPerRun(50, func() {
		k.Verify(msg, sig)
		k.Verify(msg, bad)
		VerifyTimingSafe(nil, msg, sig)
		VerifyTimingSafe(k, msg, nil)
	}); n != 0 {
		t.Errorf("Ed25519 verification allocates %v times", n)
	}
}

// BenchmarkVerify7200 compares single verification of a 7,200-byte message:
// crypto/ed25519 (decodes A every time) against VerifyKey.Verify with the
// key in the decoded-key cache (hot, ZIP-215) and not in it (cold: the
// cache turned off, so every verification decodes A), and the failures:
// a wrong signature under a hot key and the dummy of a missing queue, which
// both pay one decoding (SPEC §7).
func BenchmarkVerify7200(b *testing.B) {
	s := vectorSigner(b)
	msg := make([]byte, 7200)
	rand.Read(msg)
	sig, _ := s.Sign(msg)
	wrong := bytes.Clone(sig)
	wrong[0] ^= 1 // R still decodes (most of the time; checked below)
	k := s.VerifyKey()
	b.Run("stdlib", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if !ed25519.Verify(k.ed[:], msg, sig) {
				b.Fatal("no verify")
			}
		}
	})
	b.Run("decoded-key", func(b *testing.B) {
		k.Verify(msg, sig) // into the cache
		b.ReportAllocs()
		for b.Loop() {
			if !k.Verify(msg, sig) {
				b.Fatal("no verify")
			}
		}
	})
	b.Run("cold-key", func(b *testing.B) {
		SetKeyCacheSize(0)
		b.Cleanup(func() { SetKeyCacheSize(DefaultKeyCacheSize) })
		b.ReportAllocs()
		for b.Loop() {
			if !k.Verify(msg, sig) {
				b.Fatal("no verify")
			}
		}
	})
	b.Run("wrong-sig", func(b *testing.B) {
		var r edwards25519.Point
		if _, err := r.SetBytes(wrong[:32]); err != nil {
			b.Skip("the flipped R does not decode")
		}
		k.Verify(msg, sig)
		b.ReportAllocs()
		for b.Loop() {
			if k.Verify(msg, wrong) {
				b.Fatal("verified")
			}
		}
	})
	b.Run("dummy", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			VerifyTimingSafe(nil, msg, sig)
		}
	})
}
