package codec

import (
	"crypto/ecdh"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Handshake constants of transport version 2 (SPEC §3.1, §3.2).
const (
	// TransportVersion is the only transport version this spec defines;
	// version 1 is gone (a recorded connection could be replayed).
	TransportVersion = 2
	// ClientHelloSize is the plaintext length of a client hello; part of the
	// wire format.
	ClientHelloSize = 38
	// RandomSize is the length of serverRandom and of the client's secret;
	// part of the wire format.
	RandomSize = 32
	// ShareSize is the length of an X25519 share; part of the wire format.
	ShareSize = 32
	// MaxSealedHello is the largest sealedLen a server reads before it
	// checks the exact size of its key type.
	MaxSealedHello = 4096
	// TransportInfo is the HPKE info string and RSA-OAEP label of the client
	// hello; part of the wire format.
	TransportInfo = "SMP transport v2"
	// KeyScheduleInfo starts the HKDF info of the block keys; part of the
	// wire format.
	KeyScheduleInfo = "SMP transport v2 keys"
	// okmSize is the output of the key schedule: two keys and two nonces.
	okmSize = 2*32 + 2*12
)

// serverHelloHeader is the fixed part of a server hello before the key;
// serverHelloTail follows the key (serverRandom, serverShare).
const (
	serverHelloHeader = 10
	serverHelloTail   = RandomSize + ShareSize
)

// ErrHello reports a malformed handshake message. It is returned wrapped
// with the reason.
var ErrHello = errors.New("codec: malformed hello")

// ServerHello is the plaintext the server sends on accept. The zero value
// is not a valid hello; values are not safe for concurrent mutation.
type ServerHello struct {
	MinVersion uint16           // lowest transport version the server speaks
	MaxVersion uint16           // highest transport version the server speaks
	BlockSize  uint32           // block size of the connection, see ValidBlockSize
	Key        []byte           // server transport key, typed (SPEC §2); at most 65535 bytes
	Random     [RandomSize]byte // serverRandom: fresh for every connection (replay protection)
	Share      [ShareSize]byte  // serverShare: the server's X25519 public key
}

// Append appends the hello to dst:
//
//	 0        2        4           8        10           10+keyLen      42+keyLen      74+keyLen
//	+--------+--------+-----------+--------+------------+--------------+--------------+
//	| minVer | maxVer | blockSize | keyLen | key        | serverRandom | serverShare  |
//	+--------+--------+-----------+--------+------------+--------------+--------------+
//
// A Key longer than 65535 bytes cannot be framed; Append then writes keyLen
// 0 and no key, which every client rejects.
func (h *ServerHello) Append(dst []byte) []byte {
	dst = h.AppendPrefix(dst)
	dst = append(dst, h.Random[:]...)
	return append(dst, h.Share[:]...)
}

// AppendPrefix appends the part of the hello before serverRandom, which a
// server sends the same on every connection.
func (h *ServerHello) AppendPrefix(dst []byte) []byte {
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
	n = serverHelloHeader + keyLen + serverHelloTail
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
	end := serverHelloHeader + keyLen
	h.Key = append([]byte(nil), b[serverHelloHeader:end]...)
	copy(h.Random[:], b[end:end+RandomSize])
	copy(h.Share[:], b[end+RandomSize:n])
	return h, n, nil
}

// ClientHello is the plaintext of the client's sealed hello. Values are not
// safe for concurrent mutation.
type ClientHello struct {
	Version   uint16           // chosen version, within the server's range
	BlockSize uint32           // must equal the server's
	Secret    [RandomSize]byte // fresh random bytes, an input of the key schedule
}

// Append appends the 38-byte plaintext to dst:
//
//	 0         2           6                  38
//	+---------+-----------+------------------+
//	| version | blockSize | secret           |
//	+---------+-----------+------------------+
func (h *ClientHello) Append(dst []byte) []byte {
	dst = binary.BigEndian.AppendUint16(dst, h.Version)
	dst = binary.BigEndian.AppendUint32(dst, h.BlockSize)
	return append(dst, h.Secret[:]...)
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
	copy(h.Secret[:], plain[6:38])
	return h, nil
}

// SessionKeys are the block keys and base nonces of one connection, the
// output of the key schedule (SPEC §3.2). Clear them when the connection ends.
type SessionKeys struct {
	C2SKey   [32]byte // AES-256 key of client→server blocks
	C2SNonce [12]byte // base nonce of client→server blocks
	S2CKey   [32]byte // AES-256 key of server→client blocks
	S2CNonce [12]byte // base nonce of server→client blocks
}

// Clear zeroes the keys.
func (k *SessionKeys) Clear() { *k = SessionKeys{} }

// DeriveKeys is the key schedule of SPEC §3.2:
//
//	transcript = SHA-256(SH ‖ CH)
//	okm        = HKDF-SHA256(IKM = secret ‖ dh, salt = serverRandom,
//	                         info = "SMP transport v2 keys" ‖ transcript, L = 88)
//	c2sKey = okm[0:32]  c2sNonce = okm[32:44]  s2cKey = okm[44:76]  s2cNonce = okm[76:88]
//
// random is serverRandom, sh the server hello exactly as sent (which holds
// it), in parts that are hashed in order, and ch the client hello exactly as
// sent (sealedLen ‖ sealed ‖ clientShare). The intermediate secrets are
// cleared before it returns.
func DeriveKeys(secret, dh, random *[32]byte, ch []byte, sh ...[]byte) SessionKeys {
	th := sha256.New()
	for _, p := range sh {
		th.Write(p)
	}
	th.Write(ch)
	var infoBuf [len(KeyScheduleInfo) + sha256.Size]byte
	info := append(infoBuf[:0], KeyScheduleInfo...)
	info = th.Sum(info)
	var ikm [64]byte
	copy(ikm[:32], secret[:])
	copy(ikm[32:], dh[:])
	var okm [okmSize]byte
	hkdfSHA256(okm[:], ikm[:], random[:], info)
	clear(ikm[:])
	var k SessionKeys
	copy(k.C2SKey[:], okm[0:32])
	copy(k.C2SNonce[:], okm[32:44])
	copy(k.S2CKey[:], okm[44:76])
	copy(k.S2CNonce[:], okm[76:88])
	clear(okm[:])
	return k
}

// x25519 computes the shared secret of priv and the peer's 32-byte share. An
// all-zero result (a low-order share) is an error (SPEC §3.2). The relay's
// own keys (X25519Key) take a path that allocates nothing; any other
// ecdh.KeyExchanger goes through crypto/ecdh's types.
func x25519(priv ecdh.KeyExchanger, peer []byte) ([32]byte, error) {
	var out [32]byte
	if len(peer) != ShareSize {
		return out, fmt.Errorf("%w: share of %d bytes", ErrHello, len(peer))
	}
	if k, ok := priv.(*X25519Key); ok {
		if !k.shared(&out, peer) {
			return out, fmt.Errorf("%w: all-zero shared secret", ErrHello)
		}
		return out, nil
	}
	pub, err := ecdh.X25519().NewPublicKey(peer)
	if err != nil {
		return out, fmt.Errorf("%w: share: %v", ErrHello, err)
	}
	s, err := priv.ECDH(pub)
	if err != nil || len(s) != 32 {
		return out, fmt.Errorf("%w: share gives no shared secret", ErrHello)
	}
	copy(out[:], s)
	clear(s)
	if subtle.ConstantTimeCompare(out[:], make([]byte, 32)) == 1 {
		return out, fmt.Errorf("%w: all-zero shared secret", ErrHello)
	}
	return out, nil
}

// ClientHandshake is the client's side of SPEC §3.2 for the server hello sh
// (exactly as received, already parsed into h, whose key the caller pinned;
// server is that key). It returns the client hello to send (sealedLen ‖
// sealed ‖ clientShare) and the connection's block keys. The client's
// secret, share and shared secret are cleared or dropped before it returns.
func ClientHandshake(sh []byte, h *ServerHello, server *KEMPublicKey) (ch []byte, keys SessionKeys, err error) {
	if h == nil || server == nil {
		return nil, keys, fmt.Errorf("%w: nil hello or key", ErrHello)
	}
	if h.MinVersion > TransportVersion || h.MaxVersion < TransportVersion {
		return nil, keys, fmt.Errorf("%w: server speaks transport versions %d..%d, not %d",
			ErrHello, h.MinVersion, h.MaxVersion, TransportVersion)
	}
	if h.BlockSize > MaxBlockSize || !ValidBlockSize(int(h.BlockSize)) {
		return nil, keys, fmt.Errorf("%w: block size %d", ErrHello, h.BlockSize)
	}
	priv, err := GenerateX25519Key()
	if err != nil {
		return nil, keys, fmt.Errorf("codec: client share: %w", err)
	}
	defer priv.Erase()
	dh, err := x25519(priv, h.Share[:])
	if err != nil {
		return nil, keys, err
	}
	defer clear(dh[:])
	hello := ClientHello{Version: TransportVersion, BlockSize: h.BlockSize}
	if _, err := rand.Read(hello.Secret[:]); err != nil {
		return nil, keys, fmt.Errorf("codec: client hello: %w", err)
	}
	defer clear(hello.Secret[:])
	var buf [ClientHelloSize]byte
	plain := hello.Append(buf[:0])
	sealed, err := server.Seal([]byte(TransportInfo), plain)
	clear(buf[:])
	if err != nil {
		return nil, keys, err
	}
	if len(sealed) > MaxSealedHello {
		return nil, keys, fmt.Errorf("%w: sealed hello of %d bytes", ErrHello, len(sealed))
	}
	ch = make([]byte, 2, 2+len(sealed)+ShareSize)
	binary.BigEndian.PutUint16(ch, uint16(len(sealed)))
	ch = append(ch, sealed...)
	ch = append(ch, priv.PublicKey().Bytes()...)
	return ch, DeriveKeys(&hello.Secret, &dh, &h.Random, ch, sh), nil
}

// ClientHelloLen returns the length of the whole client hello (sealedLen ‖
// sealed ‖ clientShare) for the server key k: the sealed size of k's type is
// the only one a server accepts (SPEC §3.2).
func ClientHelloLen(k *KEMPublicKey) int {
	return 2 + k.SealedSize(ClientHelloSize) + ShareSize
}

// ServerHandshake is the server's side of SPEC §3.2: it opens the client
// hello ch (sealedLen ‖ sealed ‖ clientShare, exactly ClientHelloLen bytes),
// checks it against the server's version and block size, and derives the
// connection's block keys with the server's share. random is the
// connection's serverRandom and sh the server hello as sent, in parts. Every
// failure is ErrHello or ErrKEMOpen, with no detail a
// peer could use: the caller closes the connection the same way for all.
func ServerHandshake(priv *KEMPrivateKey, share ecdh.KeyExchanger, blockSize uint32, random *[32]byte, ch []byte, sh ...[]byte) (SessionKeys, error) {
	if priv == nil || share == nil || random == nil {
		return SessionKeys{}, fmt.Errorf("%w: nil key, share or random", ErrHello)
	}
	if len(ch) != ClientHelloLen(priv.Public()) {
		return SessionKeys{}, fmt.Errorf("%w: client hello of %d bytes", ErrHello, len(ch))
	}
	if int(binary.BigEndian.Uint16(ch)) != len(ch)-2-ShareSize {
		return SessionKeys{}, fmt.Errorf("%w: sealedLen", ErrHello)
	}
	sealed, clientShare := ch[2:len(ch)-ShareSize], ch[len(ch)-ShareSize:]
	plain, err := priv.Open([]byte(TransportInfo), sealed)
	if err != nil {
		return SessionKeys{}, err
	}
	h, err := ParseClientHello(plain)
	clear(plain)
	defer clear(h.Secret[:])
	if err != nil {
		return SessionKeys{}, err
	}
	if h.Version != TransportVersion || h.BlockSize != blockSize {
		return SessionKeys{}, fmt.Errorf("%w: version %d, block size %d", ErrHello, h.Version, h.BlockSize)
	}
	dh, err := x25519(share, clientShare)
	defer clear(dh[:])
	if err != nil {
		return SessionKeys{}, err
	}
	return DeriveKeys(&h.Secret, &dh, random, ch, sh...), nil
}
