package main

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/smprelay/smprelay/codec"
)

// CryptoCosts is the crypto-limit scenario: the per-core cost on this
// machine of what every message and handshake must pay, measured
// single-threaded in this process as CPU time of the thread (so that other
// processes on a shared machine do not inflate it), and the limits it implies.
type CryptoCosts struct {
	Cores     int     `json:"cores"`
	BlockSize int     `json:"blockSize"`
	BodySize  int     `json:"bodySize"`
	Ops       []Op    `json:"ops"`
	Formula   string  `json:"formula"`
	Cycles    []Cycle `json:"cycles"`
	// AllCoresFactor is the CPU time of an Ed25519 verification with one
	// thread per core all verifying at once, over its time alone. Above 1 the
	// cores share something (virtual CPUs on one physical core's hyperthreads,
	// caches, power): a core does less when its neighbours are busy, so the
	// machine's limit is less than cores × the one-core rate.
	AllCoresFactor float64 `json:"allCoresFactor"`
}

// Op is the cost of one operation on one core.
type Op struct {
	Name  string  `json:"name"`
	NsOp  float64 `json:"nsPerOp"`
	Count int     `json:"count"`
}

// Cycle is the crypto cost of one delivered message (or handshake) and the
// rate the machine's cores could sustain if that were all they did.
type Cycle struct {
	Name    string  `json:"name"` // signed-ed25519, signed-rsa, unsigned, handshake-<kem>
	NsPerOp float64 `json:"nsPerOp"`
	// NsAllCores is NsPerOp × AllCoresFactor: the cost when every core is
	// busy, as under load. The factor varied from 1.0 to 1.6 between runs on
	// one machine, so the limits and the goals use NsPerOp, and NsAllCores
	// gives a second, lower bound-side ratio.
	NsAllCores float64 `json:"nsPerOpAllCoresBusy"`
	LimitOps   float64 `json:"limitPerSecond"` // cores × 1e9 / NsPerOp
	Terms      string  `json:"terms"`
}

func (c *CryptoCosts) op(name string) float64 {
	for _, o := range c.Ops {
		if o.Name == name {
			return o.NsOp
		}
	}
	return 0
}

func (c *CryptoCosts) cycle(name string) Cycle {
	for _, cy := range c.Cycles {
		if cy.Name == name {
			return cy
		}
	}
	return Cycle{}
}

// threadCPU returns the CPU time of the calling OS thread
// (CLOCK_THREAD_CPUTIME_ID): on a shared machine, wall time per operation
// would count the time other processes held the core.
func threadCPU() time.Duration {
	var ts syscall.Timespec
	const clockThreadCPUTime = 3 // CLOCK_THREAD_CPUTIME_ID, linux/time.h
	if _, _, e := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clockThreadCPUTime, uintptr(unsafe.Pointer(&ts)), 0); e != 0 {
		return 0
	}
	return time.Duration(ts.Nano())
}

// timeOp runs f in batches until d of CPU time has passed and returns CPU ns
// per call. The goroutine stays on one OS thread so that the thread's clock
// is its clock.
func timeOp(d time.Duration, f func()) (float64, int) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	f() // warm up: first-use allocations, key expansion
	n, batch := 0, 1
	start := threadCPU()
	for threadCPU()-start < d {
		for range batch {
			f()
		}
		n += batch
		batch = min(batch*2, 256)
	}
	return float64((threadCPU() - start).Nanoseconds()) / float64(n), n
}

// measureCrypto times each operation for d.
func measureCrypto(cfg *config, d time.Duration, p *progress) (*CryptoCosts, error) {
	cc := &CryptoCosts{Cores: runtime.NumCPU(), BlockSize: codec.DefaultBlockSize, BodySize: cfg.body}
	// failed is set by an operation that goes wrong; the timing ends in an
	// error rather than a figure for work that was not done.
	var failed error
	add := func(name string, f func() error) error {
		ns, n := timeOp(d, func() {
			if err := f(); err != nil && failed == nil {
				failed = fmt.Errorf("%s: %w", name, err) // the caller adds "crypto-limit: "
			}
		})
		cc.Ops = append(cc.Ops, Op{Name: name, NsOp: ns, Count: n})
		p.set(float64(len(cc.Ops)), name)
		return failed
	}
	qid := make([]byte, codec.QueueIDSize)
	body := make([]byte, cfg.body)
	// What the server verifies: a signed SEND with the configured body and an ACK.
	sendSigned := codec.AppendSigned(nil, []byte("P1"), qid, codec.CmdSEND, nil, body)
	ackSigned := codec.AppendSigned(nil, []byte("P2"), qid, codec.CmdACK, nil, nil)
	for _, alg := range []struct {
		name string
		alg  codec.SigAlg
		bits int
	}{{"ed25519", codec.SigEd25519, 0}, {"rsa2048", codec.SigRSA, 2048}} {
		s, err := codec.GenerateSigner(alg.alg, alg.bits)
		if err != nil {
			return nil, err
		}
		verify, err := stdlibVerifier(s)
		if err != nil {
			return nil, err
		}
		for _, m := range []struct {
			what   string
			signed []byte
		}{{"SEND", sendSigned}, {"ACK", ackSigned}} {
			sig, err := s.Sign(m.signed)
			if err != nil {
				return nil, err
			}
			signed := m.signed
			if err := add(fmt.Sprintf("verify-%s-%s", alg.name, m.what), func() error {
				if !verify(signed, sig) {
					return errors.New("signature does not verify")
				}
				return nil
			}); err != nil {
				return nil, err
			}
		}
	}

	// AES-256-GCM of one block, each direction.
	bs := codec.DefaultBlockSize
	var key [32]byte
	var nonce [12]byte
	var seal, open codec.BlockCipher
	if err := seal.Init(key, nonce); err != nil {
		return nil, err
	}
	if err := open.Init(key, nonce); err != nil {
		return nil, err
	}
	const ring = 512
	blocks := make([][]byte, ring)
	for i := range blocks {
		blocks[i] = make([]byte, bs)
	}
	i := 0
	if err := add("aes256gcm-seal-block", func() error {
		i++
		return seal.Seal(blocks[(i-1)%ring])
	}); err != nil {
		return nil, err
	}
	// Open needs the blocks in nonce order: seal a fresh ring ahead of each
	// pass and time only the opens.
	var openNs float64
	var opened int
	var sealer, opener codec.BlockCipher
	_ = sealer.Init(key, nonce)
	_ = opener.Init(key, nonce)
	runtime.LockOSThread()
	for openNs < float64(d.Nanoseconds()) {
		for _, b := range blocks {
			codec.Pad(b[:bs-codec.TagSize])
			if err := sealer.Seal(b); err != nil {
				runtime.UnlockOSThread()
				return nil, err
			}
		}
		t0 := threadCPU()
		for _, b := range blocks {
			if _, err := opener.Open(b); err != nil {
				runtime.UnlockOSThread()
				return nil, err
			}
		}
		openNs += float64((threadCPU() - t0).Nanoseconds())
		opened += ring
	}
	runtime.UnlockOSThread()
	cc.Ops = append(cc.Ops, Op{Name: "aes256gcm-open-block", NsOp: openNs / float64(opened), Count: opened})

	for _, kt := range []codec.KEMType{codec.KEMRSA, codec.KEMX25519, codec.KEMMLKEM768X25519} {
		priv, err := codec.GenerateKEMKey(kt)
		if err != nil {
			return nil, err
		}
		// The server's side of a v2 handshake (SPEC §3.2): the KEM open, the
		// X25519 with the client's share and the key schedule. The server's
		// own share is reused across handshakes, as the relay does, and is
		// the relay's kind of key (codec.X25519Key).
		shPriv, err := codec.GenerateX25519Key()
		if err != nil {
			return nil, err
		}
		sh := codec.ServerHello{MinVersion: codec.TransportVersion, MaxVersion: codec.TransportVersion,
			BlockSize: uint32(bs), Key: priv.Public().Bytes()}
		copy(sh.Share[:], shPriv.PublicKey().Bytes())
		if _, err := rand.Read(sh.Random[:]); err != nil {
			return nil, err
		}
		raw := sh.Append(nil)
		ch, _, err := codec.ClientHandshake(raw, &sh, priv.Public())
		if err != nil {
			return nil, err
		}
		if err := add("server-handshake-"+kt.String(), func() error {
			_, err := codec.ServerHandshake(priv, shPriv, uint32(bs), &sh.Random, ch, raw)
			return err
		}); err != nil {
			return nil, err
		}
	}
	cc.AllCoresFactor = allCoresFactor(d, ackSigned)
	p.set(10, "all cores")
	cc.derive()
	return cc, nil
}

// allCoresFactor times Ed25519 verifications of signed on one thread alone,
// then on every core at once (one locked thread each), and returns the ratio
// of the mean CPU time per operation. It takes the least of three tries:
// anything else running (here or on the host) only inflates it.
func allCoresFactor(d time.Duration, signed []byte) float64 {
	s, err := codec.GenerateSigner(codec.SigEd25519, 0)
	if err != nil {
		return 1
	}
	sig, _ := s.Sign(signed)
	std, err := stdlibVerifier(s)
	if err != nil {
		return 1
	}
	verify := func() { std(signed, sig) }
	n := runtime.NumCPU()
	best := 0.0
	for range 3 {
		alone, _ := timeOp(d, verify)
		per := make([]float64, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				per[i], _ = timeOp(d, verify)
			}()
		}
		wg.Wait()
		sum := 0.0
		for _, v := range per {
			sum += v
		}
		if f := sum / float64(n) / alone; best == 0 || f < best {
			best = f
		}
	}
	return max(1, best)
}

// blockShare is the fraction of a block one transmission of n bytes takes
// when the sender packs as many as fit (SPEC §3.3): a transmission that
// leaves no room for another of its size takes the whole block.
func blockShare(n, blockSize int) float64 {
	room := blockSize - codec.TagSize
	per := room / n
	if per < 1 {
		per = 1
	}
	return 1 / float64(per)
}

// derive computes the per-message and per-handshake costs from the ops.
//
// One delivered message is one SEND → MSG → ACK cycle. The server must:
//
//	verify the SEND signature          (signed queues only)
//	verify the ACK signature           (always: ACK is signed by RK)
//	open its share of the blocks in:   SEND, ACK
//	seal its share of the blocks out:  OK (to the sender), MSG, OK (to the ACK)
//
// A block share is 1/⌊(blockSize−16)/len⌋ of a block for a transmission of
// len bytes, the least a perfectly packing peer could cost (blockShare).
// The cost is the sum, on one core; the limit is cores × 1 s ÷ cost.
// A handshake costs opening the client hello with the transport key plus
// sealing the welcome block.
func (c *CryptoCosts) derive() {
	bs := c.BlockSize
	// Transmission sizes as on the wire: base64 fields (24 chars for IDs, 88
	// for an Ed25519 signature, 344 for RSA-2048), short corrIds.
	sendLen := func(sigB64 int) int {
		return sigB64 + 2 + 2 + 2 + 24 + 2 + len(fmt.Sprintf("SEND %d\r\n", c.BodySize)) + c.BodySize + 4
	}
	ackLen := func(sigB64 int) int { return sigB64 + 2 + 2 + 2 + 24 + 2 + len("ACK\r\n") }
	okLen := 2 + 2 + 2 + 24 + 2 + len("OK\r\n")
	msgLen := 2 + 2 + 24 + 2 + len(fmt.Sprintf("MSG 123456789012 2026-11-25T19:07:19Z %d\r\n", c.BodySize)) + c.BodySize + 4
	open, seal := c.op("aes256gcm-open-block"), c.op("aes256gcm-seal-block")
	out := seal * (2*blockShare(okLen, bs) + blockShare(msgLen, bs))
	c.Formula = "per delivered message: verify(SEND) [signed only] + verify(ACK) + open × (share(SEND) + share(ACK)) + " +
		"seal × (2·share(OK) + share(MSG)); share(t) = 1/⌊(blockSize−16)/len(t)⌋; each term timed on one core alone; limit = cores × 1 s ÷ cost. " +
		"The all-cores factor (the slowdown of one core's verifications when every core verifies) gives a second cost, under load. " +
		"Per handshake: open(client hello) + seal(welcome block)."
	for _, a := range []struct {
		cycle, alg string
		sig        int
	}{{"signed-ed25519", "ed25519", 88}, {"signed-rsa2048", "rsa2048", 344}} {
		in := open * (blockShare(sendLen(a.sig), bs) + blockShare(ackLen(a.sig), bs))
		v := c.op("verify-"+a.alg+"-SEND") + c.op("verify-"+a.alg+"-ACK")
		c.addCycle(a.cycle, v+in+out, fmt.Sprintf("verify %.1f µs + AES in %.1f µs + AES out %.1f µs", v/1e3, in/1e3, out/1e3))
	}
	in := open * (blockShare(sendLen(0), bs) + blockShare(ackLen(88), bs))
	v := c.op("verify-ed25519-ACK")
	c.addCycle("unsigned", v+in+out, fmt.Sprintf("verify(ACK, Ed25519) %.1f µs + AES in %.1f µs + AES out %.1f µs", v/1e3, in/1e3, out/1e3))
	for _, kt := range []codec.KEMType{codec.KEMRSA, codec.KEMX25519, codec.KEMMLKEM768X25519} {
		o := c.op("server-handshake-" + kt.String())
		c.addCycle("handshake-"+kt.String(), o+seal, fmt.Sprintf("hello open, X25519 and key schedule %.1f µs + welcome seal %.1f µs", o/1e3, seal/1e3))
	}
}

func (c *CryptoCosts) addCycle(name string, ns float64, terms string) {
	f := c.AllCoresFactor
	if f < 1 {
		f = 1
	}
	c.Cycles = append(c.Cycles, Cycle{Name: name, NsPerOp: ns, NsAllCores: ns * f, LimitOps: float64(c.Cores) * 1e9 / ns, Terms: terms})
}

// stdlibVerifier returns the standard library's verification under s's key:
// crypto/ed25519.Verify for Ed25519 and crypto/rsa.VerifyPSS (SPEC §2's
// parameters) for RSA. The relay's own verifiers are faster (the Ed25519
// one, and RSA keys whose modulus is decoded once), and issue 15's limit is
// what a relay that did nothing but verify with the standard library would
// reach.
func stdlibVerifier(s *codec.Signer) (func(signed, sig []byte) bool, error) {
	pub, err := x509.ParsePKIXPublicKey(s.PublicSPKI())
	if err != nil {
		return nil, fmt.Errorf("bench: the signer's key: %w", err)
	}
	switch k := pub.(type) {
	case ed25519.PublicKey:
		return func(signed, sig []byte) bool { return ed25519.Verify(k, signed, sig) }, nil
	case *rsa.PublicKey:
		opts := &rsa.PSSOptions{SaltLength: 32, Hash: crypto.SHA256}
		return func(signed, sig []byte) bool {
			digest := sha256.Sum256(signed)
			return rsa.VerifyPSS(k, crypto.SHA256, digest[:], sig, opts) == nil
		}, nil
	}
	return nil, fmt.Errorf("bench: the signer's key is a %T", pub)
}
