package codec

// Variable-time multi-scalar multiplication for batch verification, on the
// field arithmetic of filippo.io/edwards25519.
//
// filippo.io/edwards25519's own VarTimeMultiScalarMult allocates its lookup
// tables and digit arrays on every call (about 1.5 KB per point, 200 KB for a
// batch of 64 signatures), which the relay's zero-allocation rule forbids on
// the hot path. This file is the same algorithm (Straus with width-5 NAF
// digits, a width-8 table for the base point) over the same formulas, with
// the tables kept in the caller's scratch. The point formulas are those of
// filippo.io/edwards25519 (Copyright 2017 The Go Authors, BSD-style licence,
// the same as Go's), in the extended coordinates of
// https://eprint.iacr.org/2008/522; only the package's exported field
// arithmetic and Point coordinates are used.

import (
	"encoding/binary"
	"sync"

	"filippo.io/edwards25519"
	"filippo.io/edwards25519/field"
)

// msmP3 is a point in extended coordinates: x = X/Z, y = Y/Z, xy = T/Z.
type msmP3 struct{ X, Y, Z, T field.Element }

// msmP1xP1 is the completed form an addition or doubling yields.
type msmP1xP1 struct{ X, Y, Z, T field.Element }

// msmP2 is a point in projective coordinates: x = X/Z, y = Y/Z.
type msmP2 struct{ X, Y, Z field.Element }

// msmCached is a point prepared as the second operand of an addition.
type msmCached struct{ YplusX, YminusX, Z, T2d field.Element }

// msmTable5 holds P, 3P, 5P, ..., 15P for width-5 NAF digits.
type msmTable5 [8]msmCached

// msmTable8 holds P, 3P, ..., 127P for width-8 NAF digits (the base point).
type msmTable8 [64]msmCached

// msmD2 is 2d, d the curve constant.
var msmD2 = new(field.Element).Add(edD, edD)

// set sets v to p.
func (v *msmP3) set(p *edwards25519.Point) *msmP3 {
	X, Y, Z, T := p.ExtendedCoordinates()
	v.X.Set(X)
	v.Y.Set(Y)
	v.Z.Set(Z)
	v.T.Set(T)
	return v
}

// setNeg sets v to −p.
func (v *msmP3) setNeg(p *edwards25519.Point) *msmP3 {
	X, Y, Z, T := p.ExtendedCoordinates()
	v.X.Negate(X)
	v.Y.Set(Y)
	v.Z.Set(Z)
	v.T.Negate(T)
	return v
}

func (v *msmP3) fromP1xP1(p *msmP1xP1) *msmP3 {
	v.X.Multiply(&p.X, &p.T)
	v.Y.Multiply(&p.Y, &p.Z)
	v.Z.Multiply(&p.Z, &p.T)
	v.T.Multiply(&p.X, &p.Y)
	return v
}

func (v *msmP2) fromP1xP1(p *msmP1xP1) *msmP2 {
	v.X.Multiply(&p.X, &p.T)
	v.Y.Multiply(&p.Y, &p.Z)
	v.Z.Multiply(&p.Z, &p.T)
	return v
}

func (v *msmP2) zero() *msmP2 {
	v.X.Zero()
	v.Y.One()
	v.Z.One()
	return v
}

// isIdentity reports whether v is the neutral element (0 : Z : Z).
func (v *msmP2) isIdentity() bool {
	var zero field.Element
	return v.X.Equal(&zero) == 1 && v.Y.Equal(&v.Z) == 1
}

func (v *msmCached) fromP3(p *msmP3) *msmCached {
	v.YplusX.Add(&p.Y, &p.X)
	v.YminusX.Subtract(&p.Y, &p.X)
	v.Z.Set(&p.Z)
	v.T2d.Multiply(&p.T, msmD2)
	return v
}

func (v *msmP1xP1) add(p *msmP3, q *msmCached) *msmP1xP1 {
	var YplusX, YminusX, PP, MM, TT2d, ZZ2 field.Element
	YplusX.Add(&p.Y, &p.X)
	YminusX.Subtract(&p.Y, &p.X)
	PP.Multiply(&YplusX, &q.YplusX)
	MM.Multiply(&YminusX, &q.YminusX)
	TT2d.Multiply(&p.T, &q.T2d)
	ZZ2.Multiply(&p.Z, &q.Z)
	ZZ2.Add(&ZZ2, &ZZ2)
	v.X.Subtract(&PP, &MM)
	v.Y.Add(&PP, &MM)
	v.Z.Add(&ZZ2, &TT2d)
	v.T.Subtract(&ZZ2, &TT2d)
	return v
}

func (v *msmP1xP1) sub(p *msmP3, q *msmCached) *msmP1xP1 {
	var YplusX, YminusX, PP, MM, TT2d, ZZ2 field.Element
	YplusX.Add(&p.Y, &p.X)
	YminusX.Subtract(&p.Y, &p.X)
	PP.Multiply(&YplusX, &q.YminusX) // flipped sign
	MM.Multiply(&YminusX, &q.YplusX) // flipped sign
	TT2d.Multiply(&p.T, &q.T2d)
	ZZ2.Multiply(&p.Z, &q.Z)
	ZZ2.Add(&ZZ2, &ZZ2)
	v.X.Subtract(&PP, &MM)
	v.Y.Add(&PP, &MM)
	v.Z.Subtract(&ZZ2, &TT2d) // flipped sign
	v.T.Add(&ZZ2, &TT2d)      // flipped sign
	return v
}

func (v *msmP1xP1) double(p *msmP2) *msmP1xP1 {
	var XX, YY, ZZ2, XplusYsq field.Element
	XX.Square(&p.X)
	YY.Square(&p.Y)
	ZZ2.Square(&p.Z)
	ZZ2.Add(&ZZ2, &ZZ2)
	XplusYsq.Add(&p.X, &p.Y)
	XplusYsq.Square(&XplusYsq)
	v.Y.Add(&YY, &XX)
	v.Z.Subtract(&YY, &XX)
	v.X.Subtract(&XplusYsq, &v.Y)
	v.T.Subtract(&ZZ2, &v.Z)
	return v
}

// msmFillOdd sets t[i] = (2i+1)·q.
func msmFillOdd(t []msmCached, q *msmP3) {
	var q2, tmp msmP3
	var pp msmP1xP1
	t[0].fromP3(q)
	q2.fromP1xP1(pp.add(q, &t[0]))
	for i := 0; i+1 < len(t); i++ {
		t[i+1].fromP3(tmp.fromP1xP1(pp.add(&q2, &t[i])))
	}
}

var (
	msmBaseOnce  sync.Once
	msmBaseTable msmTable8
)

// msmBase returns the width-8 table of the base point, built on first use.
func msmBase() *msmTable8 {
	msmBaseOnce.Do(func() {
		var b msmP3
		msmFillOdd(msmBaseTable[:], b.set(edwards25519.NewGeneratorPoint()))
	})
	return &msmBaseTable
}

// msmNAF sets naf to the width-w non-adjacent form of the scalar s and
// returns one past the highest non-zero digit (0 for zero). It is
// filippo.io/edwards25519's nonAdjacentForm (after curve25519-dalek), which
// is unexported there.
func msmNAF(naf *[256]int8, s *edwards25519.Scalar, w uint) int {
	*naf = [256]int8{}
	b := s.Bytes() // reduced, so the top bit is clear
	var digits [5]uint64
	for i := range 4 {
		digits[i] = binary.LittleEndian.Uint64(b[i*8:])
	}
	width := uint64(1 << w)
	windowMask := width - 1
	top := 0
	pos := uint(0)
	carry := uint64(0)
	for pos < 256 {
		indexU64 := pos / 64
		indexBit := pos % 64
		var bitBuf uint64
		if indexBit < 64-w {
			bitBuf = digits[indexU64] >> indexBit
		} else {
			bitBuf = (digits[indexU64] >> indexBit) | (digits[1+indexU64] << (64 - indexBit))
		}
		window := carry + (bitBuf & windowMask)
		if window&1 == 0 {
			pos++
			continue
		}
		if window < width/2 {
			carry = 0
			naf[pos] = int8(window)
		} else {
			carry = 1
			naf[pos] = int8(window) - int8(width)
		}
		top = int(pos) + 1
		pos += w
	}
	return top
}

// msmScratch holds the tables and digits of one multi-scalar
// multiplication, reused from one batch to the next.
type msmScratch struct {
	tables  []msmTable5
	nafs    [][256]int8
	baseNAF [256]int8
}

// reset makes room for n variable points.
func (m *msmScratch) reset(n int) {
	if cap(m.tables) < n {
		m.tables = make([]msmTable5, n)
		m.nafs = make([][256]int8, n)
	}
	m.tables, m.nafs = m.tables[:n], m.nafs[:n]
}

// setPoint loads point i and its scalar and returns one past the highest
// non-zero digit of the scalar.
func (m *msmScratch) setPoint(i int, p *msmP3, s *edwards25519.Scalar) int {
	msmFillOdd(m.tables[i][:], p)
	return msmNAF(&m.nafs[i], s, 5)
}

// cofactorZero reports whether [8](base·B + Σ sᵢ·Pᵢ) is the identity, the
// points and scalars having been loaded with setPoint; top is the highest
// digit count setPoint returned.
func (m *msmScratch) cofactorZero(base *edwards25519.Scalar, top int) bool {
	bt := msmBase()
	if t := msmNAF(&m.baseNAF, base, 8); t > top {
		top = t
	}
	var (
		acc msmP2
		tmp msmP1xP1
		v   msmP3
	)
	acc.zero()
	for i := top - 1; i >= 0; i-- {
		tmp.double(&acc)
		if d := m.baseNAF[i]; d > 0 {
			v.fromP1xP1(&tmp)
			tmp.add(&v, &bt[d/2])
		} else if d < 0 {
			v.fromP1xP1(&tmp)
			tmp.sub(&v, &bt[-d/2])
		}
		for j := range m.nafs {
			if d := m.nafs[j][i]; d > 0 {
				v.fromP1xP1(&tmp)
				tmp.add(&v, &m.tables[j][d/2])
			} else if d < 0 {
				v.fromP1xP1(&tmp)
				tmp.sub(&v, &m.tables[j][-d/2])
			}
		}
		acc.fromP1xP1(&tmp)
	}
	for range 3 {
		tmp.double(&acc)
		acc.fromP1xP1(&tmp)
	}
	return acc.isIdentity()
}
