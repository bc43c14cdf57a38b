package codec

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Handshake constants (SPEC §3.1, §3.2).
const (
	// ProtocolVersion is the only version this spec defines.
	ProtocolVersion = 1
	// ClientHelloSize is the plaintext length of a client hello; part of the
	// wire format.
	ClientHelloSize = 94
	// MaxSealedHello is the largest sealedLen a server accepts; larger is
	// refused before reading it.
	MaxSealedHello = 4096
	// TransportInfo is the HPKE info string of the client hello; part of the
	// wire format.
	TransportInfo = "SMP transport v1"
)

// serverHelloHeader is the fixed part of a server hello before the key.
const serverHelloHeader = 10

// ErrHello reports a malformed handshake message. It is returned wrapped
// with the reason.
var ErrHello = errors.New("codec: malformed hello")

// ServerHello is the plaintext the server sends on accept. The zero value
// is not a valid hello; values are not safe for concurrent mutation.
type ServerHello struct {
	MinVersion uint16 // lowest protocol version the server speaks
	MaxVersion uint16 // highest protocol version the server speaks
	BlockSize  uint32 // block size of the connection, see ValidBlockSize
	Key        []byte // server transport key, typed (SPEC §2); at most 65535 bytes
}

// Append appends the hello to dst:
//
//	 0        2        4           8        10
//	+--------+--------+-----------+--------+------------------+
//	| minVer | maxVer | blockSize | keyLen | key (keyLen)     |
//	+--------+--------+-----------+--------+------------------+
//
// A Key longer than 65535 bytes cannot be framed; Append then writes keyLen
// 0 and no key, which every client rejects.
func (h *ServerHello) Append(dst []byte) []byte {
	key := h.Key
	if len(key) > 0xFFFF {
		key = nil
	}
	dst = binary.BigEndian.AppendUint16(dst, h.MinVersion)
	dst = binary.BigEndian.AppendUint16(dst, h.MaxVersion)
	dst = binary.BigEndian.AppendUint32(dst, h.BlockSize)
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(key)))
	return append(dst, key...)
}

// ParseServerHello parses a server hello (layout at [ServerHello.Append])
// from the start of b and returns the number of bytes it used. While b holds
// less than a whole hello it returns io.ErrShortBuffer itself, unwrapped.
// It checks that minVersion <= maxVersion, the block size is valid and the
// key is not empty; the caller checks the versions and the key's
// fingerprint. Key is a copy.
func ParseServerHello(b []byte) (h ServerHello, n int, err error) {
	if len(b) < serverHelloHeader {
		return ServerHello{}, 0, io.ErrShortBuffer
	}
	keyLen := int(binary.BigEndian.Uint16(b[8:10]))
	n = serverHelloHeader + keyLen
	if len(b) < n {
		return ServerHello{}, 0, io.ErrShortBuffer
	}
	h = ServerHello{
		MinVersion: binary.BigEndian.Uint16(b[0:2]),
		MaxVersion: binary.BigEndian.Uint16(b[2:4]),
		BlockSize:  binary.BigEndian.Uint32(b[4:8]),
	}
	switch {
	case h.MinVersion > h.MaxVersion:
		return ServerHello{}, n, fmt.Errorf("%w: version range %d..%d", ErrHello, h.MinVersion, h.MaxVersion)
	case h.BlockSize > MaxBlockSize || !ValidBlockSize(int(h.BlockSize)):
		return ServerHello{}, n, fmt.Errorf("%w: block size %d", ErrHello, h.BlockSize)
	case keyLen == 0:
		return ServerHello{}, n, fmt.Errorf("%w: empty key", ErrHello)
	}
	h.Key = append([]byte(nil), b[serverHelloHeader:n]...)
	return h, n, nil
}

// ClientHello is the plaintext of the client's sealed hello. Values are not
// safe for concurrent mutation.
type ClientHello struct {
	Version   uint16   // chosen version, within the server's range
	BlockSize uint32   // must equal the server's
	C2SKey    [32]byte // AES-256 key of client→server blocks
	C2SNonce  [12]byte // base nonce of client→server blocks
	S2CKey    [32]byte // AES-256 key of server→client blocks
	S2CNonce  [12]byte // base nonce of server→client blocks
}

// Append appends the 94-byte plaintext to dst:
//
//	 0         2           6        38         50       82         94
//	+---------+-----------+--------+----------+--------+----------+
//	| version | blockSize | c2sKey | c2sNonce | s2cKey | s2cNonce |
//	+---------+-----------+--------+----------+--------+----------+
func (h *ClientHello) Append(dst []byte) []byte {
	dst = binary.BigEndian.AppendUint16(dst, h.Version)
	dst = binary.BigEndian.AppendUint32(dst, h.BlockSize)
	dst = append(dst, h.C2SKey[:]...)
	dst = append(dst, h.C2SNonce[:]...)
	dst = append(dst, h.S2CKey[:]...)
	return append(dst, h.S2CNonce[:]...)
}

// ParseClientHello parses exactly ClientHelloSize bytes (layout at
// [ClientHello.Append]). The caller checks the version and block size.
func ParseClientHello(plain []byte) (ClientHello, error) {
	if len(plain) != ClientHelloSize {
		return ClientHello{}, fmt.Errorf("%w: client hello of %d bytes, want %d", ErrHello, len(plain), ClientHelloSize)
	}
	var h ClientHello
	h.Version = binary.BigEndian.Uint16(plain[0:2])
	h.BlockSize = binary.BigEndian.Uint32(plain[2:6])
	copy(h.C2SKey[:], plain[6:38])
	copy(h.C2SNonce[:], plain[38:50])
	copy(h.S2CKey[:], plain[50:82])
	copy(h.S2CNonce[:], plain[82:94])
	return h, nil
}

// NewClientHello returns a hello with Version ProtocolVersion, the given
// block size and fresh random keys and nonces.
func NewClientHello(blockSize uint32) (ClientHello, error) {
	if blockSize > MaxBlockSize || !ValidBlockSize(int(blockSize)) {
		return ClientHello{}, fmt.Errorf("%w: block size %d", ErrHello, blockSize)
	}
	h := ClientHello{Version: ProtocolVersion, BlockSize: blockSize}
	for _, p := range [][]byte{h.C2SKey[:], h.C2SNonce[:], h.S2CKey[:], h.S2CNonce[:]} {
		if _, err := rand.Read(p); err != nil {
			return ClientHello{}, fmt.Errorf("codec: client hello: %w", err)
		}
	}
	return h, nil
}

// SealClientHello seals h to the server transport key and returns the whole
// client hello as sent on the wire:
//
//	 0           2
//	+-----------+------------------------+
//	| sealedLen | sealed (sealedLen)     |
//	+-----------+------------------------+
//
// sealed is the modulus length for rsa, 32+94+16 = 142 bytes for x25519 and
// 1120+94+16 = 1230 bytes for mlkem768x25519.
func SealClientHello(server *KEMPublicKey, h *ClientHello) ([]byte, error) {
	if server == nil || h == nil {
		return nil, fmt.Errorf("%w: nil key or hello", ErrHello)
	}
	var buf [ClientHelloSize]byte
	plain := h.Append(buf[:0])
	sealed, err := server.Seal([]byte(TransportInfo), plain)
	clear(buf[:]) // the hello holds the session keys
	if err != nil {
		return nil, err
	}
	if len(sealed) > MaxSealedHello {
		return nil, fmt.Errorf("%w: sealed hello of %d bytes", ErrHello, len(sealed))
	}
	out := make([]byte, 2, 2+len(sealed))
	binary.BigEndian.PutUint16(out, uint16(len(sealed)))
	return append(out, sealed...), nil
}

// OpenClientHello opens the sealed part of a client hello (without the
// 2-byte length) with the server's transport key; HPKE kinds use info
// TransportInfo. A sealed part that does not open or has the wrong length
// is an error; the caller checks the version and block size.
func OpenClientHello(priv *KEMPrivateKey, sealed []byte) (ClientHello, error) {
	if len(sealed) > MaxSealedHello {
		return ClientHello{}, fmt.Errorf("%w: sealed hello of %d bytes", ErrHello, len(sealed))
	}
	plain, err := priv.Open([]byte(TransportInfo), sealed)
	if err != nil {
		return ClientHello{}, err
	}
	h, err := ParseClientHello(plain)
	clear(plain) // the hello holds the session keys
	return h, err
}
