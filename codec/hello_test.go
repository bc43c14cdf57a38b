package codec

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
)

func TestServerHelloRoundTrip(t *testing.T) {
	for _, typ := range kemTypes {
		key := testKEMKey(t, typ).Public().Bytes()
		h := ServerHello{MinVersion: 1, MaxVersion: 1, BlockSize: DefaultBlockSize, Key: key}
		wire := h.Append([]byte("prefix"))[len("prefix"):]
		if len(wire) != 10+len(key) {
			t.Fatalf("%v: %d bytes", typ, len(wire))
		}
		if !bytes.Equal(wire[:10], []byte{0, 1, 0, 1, 0, 0, 0x20, 0, byte(len(key) >> 8), byte(len(key))}) {
			t.Errorf("%v: header % x", typ, wire[:10])
		}
		for i := range len(wire) {
			if _, n, err := ParseServerHello(wire[:i]); err != io.ErrShortBuffer || n != 0 {
				t.Fatalf("%v: prefix of %d bytes: n=%d err=%v", typ, i, n, err)
			}
		}
		got, n, err := ParseServerHello(append(bytes.Clone(wire), "more"...))
		if err != nil || n != len(wire) {
			t.Fatalf("%v: n=%d err=%v", typ, n, err)
		}
		if got.MinVersion != 1 || got.MaxVersion != 1 || got.BlockSize != DefaultBlockSize || !bytes.Equal(got.Key, key) {
			t.Errorf("%v: parsed %+v", typ, got)
		}
		if &got.Key[0] == &wire[10] {
			t.Errorf("%v: Key aliases the input", typ)
		}
	}
}

func TestParseServerHelloRejects(t *testing.T) {
	hello := func(minV, maxV uint16, bs uint32, key []byte) []byte {
		h := ServerHello{MinVersion: minV, MaxVersion: maxV, BlockSize: bs, Key: key}
		return h.Append(nil)
	}
	key := []byte{2, 1, 2, 3}
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"min > max", hello(2, 1, 8192, key)},
		{"block size 0", hello(1, 1, 0, key)},
		{"block size 2048", hello(1, 1, 2048, key)},
		{"block size 5000", hello(1, 1, 5000, key)},
		{"block size 2^17", hello(1, 1, 1<<17, key)},
		{"block size 2^32-1", hello(1, 1, 1<<32-1, key)},
		{"empty key", hello(1, 1, 8192, nil)},
	} {
		if _, _, err := ParseServerHello(tc.b); !errors.Is(err, ErrHello) {
			t.Errorf("%s: error = %v, want ErrHello", tc.name, err)
		}
	}
	// A key too long to frame is not written.
	h := ServerHello{MinVersion: 1, MaxVersion: 1, BlockSize: 8192, Key: make([]byte, 1<<16)}
	if b := h.Append(nil); len(b) != 10 {
		t.Errorf("oversized key: %d bytes", len(b))
	}
}

func TestClientHelloEncoding(t *testing.T) {
	var h ClientHello
	h.Version = 0x0102
	h.BlockSize = 0x03040506
	for i := range 32 {
		h.C2SKey[i], h.S2CKey[i] = 0x10+byte(i), 0x50+byte(i)
	}
	for i := range 12 {
		h.C2SNonce[i], h.S2CNonce[i] = 0x30+byte(i), 0x70+byte(i)
	}
	b := h.Append(nil)
	if len(b) != ClientHelloSize {
		t.Fatalf("%d bytes", len(b))
	}
	want := []byte{1, 2, 3, 4, 5, 6}
	want = append(want, h.C2SKey[:]...)
	want = append(want, h.C2SNonce[:]...)
	want = append(want, h.S2CKey[:]...)
	want = append(want, h.S2CNonce[:]...)
	if !bytes.Equal(b, want) {
		t.Fatalf("layout\n got % x\nwant % x", b, want)
	}
	got, err := ParseClientHello(b)
	if err != nil || got != h {
		t.Fatalf("ParseClientHello = %+v, %v", got, err)
	}
	for _, n := range []int{0, 93, 95} {
		if _, err := ParseClientHello(make([]byte, n)); !errors.Is(err, ErrHello) {
			t.Errorf("%d bytes: error = %v", n, err)
		}
	}
}

func TestNewClientHello(t *testing.T) {
	a, err := NewClientHello(DefaultBlockSize)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewClientHello(DefaultBlockSize)
	if a.Version != ProtocolVersion || a.BlockSize != DefaultBlockSize {
		t.Errorf("hello %+v", a)
	}
	if a.C2SKey == b.C2SKey || a.S2CKey == b.S2CKey || a.C2SKey == a.S2CKey || a.C2SNonce == b.C2SNonce || a.S2CNonce == b.S2CNonce {
		t.Error("keys or nonces repeat")
	}
	for _, bs := range []uint32{0, 4095, 1 << 17, 1<<32 - 1} {
		if _, err := NewClientHello(bs); !errors.Is(err, ErrHello) {
			t.Errorf("block size %d: error = %v", bs, err)
		}
	}
}

func TestClientHelloSealOpen(t *testing.T) {
	sealedLen := map[KEMType]int{KEMRSA: 256, KEMX25519: 142, KEMMLKEM768X25519: 1230}
	for _, typ := range kemTypes {
		t.Run(typ.String(), func(t *testing.T) {
			priv := testKEMKey(t, typ)
			h, err := NewClientHello(DefaultBlockSize)
			if err != nil {
				t.Fatal(err)
			}
			wire, err := SealClientHello(priv.Public(), &h)
			if err != nil {
				t.Fatal(err)
			}
			n := int(binary.BigEndian.Uint16(wire))
			if n != len(wire)-2 || n != sealedLen[typ] {
				t.Fatalf("sealedLen %d, %d bytes follow, want %d", n, len(wire)-2, sealedLen[typ])
			}
			sealed := wire[2:]
			got, err := OpenClientHello(priv, sealed)
			if err != nil || got != h {
				t.Fatalf("OpenClientHello = %+v, %v", got, err)
			}
			for _, i := range []int{0, n / 2, n - 1} {
				bad := bytes.Clone(sealed)
				bad[i] ^= 0x04
				if _, err := OpenClientHello(priv, bad); !errors.Is(err, ErrKEMOpen) {
					t.Errorf("tampered byte %d: error = %v", i, err)
				}
			}
			if _, err := OpenClientHello(priv, sealed[:n-1]); err == nil {
				t.Error("truncated hello opened")
			}
			// Properly sealed plaintexts of the wrong length.
			for _, size := range []int{0, ClientHelloSize - 1, ClientHelloSize + 1} {
				s, err := priv.Public().Seal([]byte(TransportInfo), make([]byte, size))
				if err != nil {
					t.Fatal(err)
				}
				if _, err := OpenClientHello(priv, s); !errors.Is(err, ErrHello) {
					t.Errorf("%d-byte plaintext: error = %v", size, err)
				}
			}
			if typ != KEMRSA {
				s, _ := priv.Public().Seal([]byte("SMP e2e v1"), h.Append(nil))
				if _, err := OpenClientHello(priv, s); !errors.Is(err, ErrKEMOpen) {
					t.Errorf("wrong info: error = %v", err)
				}
			}
			other, _ := GenerateKEMKey(typ)
			if _, err := OpenClientHello(other, sealed); err == nil {
				t.Error("opened with another key")
			}
			if _, err := OpenClientHello(priv, make([]byte, MaxSealedHello+1)); !errors.Is(err, ErrHello) {
				t.Errorf("oversized: error = %v", err)
			}
		})
	}
	if _, err := SealClientHello(nil, &ClientHello{}); err == nil {
		t.Error("sealed to nil key")
	}
}
