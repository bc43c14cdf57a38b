package main

import (
	"context"
	"crypto/rand"
	"io"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/smprelay/smprelay/codec"
)

// maxRounds bounds every attack loop by count as well as by its phase's
// time: no loop of the harness runs unbounded whatever the relay does.
const maxRounds = 1 << 24

// maxRedials bounds how often one attacker slot re-dials after the relay
// closed or refused it, so a relay that refuses at once costs a bounded
// number of connects.
const maxRedials = 2000

// target is what an attack is aimed at.
type target struct {
	addr, fp  string
	src       string // the attack's source address, 127.0.0.x
	maxConns  int    // the relay's max-conns (0: unknown)
	honestRID []byte // the honest recipient's queue, for sub-steal
	dialers   int    // concurrent dialers of the floods that dial
}

// figures are an attack's own results, by name.
type figures struct {
	mu sync.Mutex
	m  map[string]float64
}

func (f *figures) set(name string, v float64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil {
		f.m = map[string]float64{}
	}
	f.m[name] = v
}

// attack is one hostile load.
type attack struct {
	name   string
	what   string
	perKEM bool // run against a relay of each --hostile-kems key type
	// goal: issue 12's goal (honest full-cycle p99 within 5× baseline + 5 ms) applies.
	goal bool
	run  func(ctx context.Context, t *target, ctr *attackCounters, fig *figures)
}

// attacks are every attack, in the order they run on one relay. The
// memory fill is last: what it stores stays for the rest of the relay's life.
var attacks = []attack{
	{name: "unsigned-send-1", what: "unsigned SENDs to random unknown sender IDs, packed ~190 per block, 1 connection", run: sendFlood(1)},
	{name: "unsigned-send-8", what: "the same from 8 connections", run: sendFlood(8), goal: true},
	{name: "unsigned-send-32", what: "the same from 32 connections", run: sendFlood(32)},
	{name: "hello-replay", what: "one recorded sealed client hello replayed on new connections", run: helloFlood(true), perKEM: true, goal: true},
	{name: "hello-random", what: "random client hellos of the right length (sealedLen right, the rest random)", run: helloFlood(false), perKEM: true, goal: true},
	{name: "sub-steal", what: "SUB of the honest client's queue, signed by a key of the attacker's own", run: subSteal},
	{name: "amplification", what: "repeated SUB without ACK of own queues holding a max-size message, 4 connections", run: amplification},
	{name: "conns-held", what: "completed handshakes held open from one address, up to the relay's max-conns", run: holdConns},
	{name: "conns-slowloris", what: "connections that never send the hello, up to max-conns, re-dialled when closed", run: slowloris},
	{name: "new-reconnect", what: "NEW as fast as allowed on a connection, reconnect when refused, repeat", run: newReconnect},
	{name: "memory-fill", what: "4 connections: create queues, secure them, fill each to quota with max-size SENDs", run: memoryFill},
}

func attackNames() []string {
	var out []string
	for _, a := range attacks {
		out = append(out, a.name)
	}
	return out
}

// fdBudget is how many connections this process can hold for an attack,
// keeping some descriptors for the honest client and the relay's pipes.
func fdBudget() int {
	var r syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r) != nil || r.Cur < 1024 {
		return 512
	}
	return int(min(r.Cur, 1<<20)) - 512
}

// connTarget is how many connections the connection attacks open: the
// relay's max-conns, within this process's descriptors.
func connTarget(t *target, fig *figures) int {
	n := fdBudget()
	if t.maxConns > 0 && t.maxConns < n {
		n = t.maxConns
	}
	fig.set("relay max-conns", float64(t.maxConns))
	fig.set("connections aimed for", float64(n))
	return n
}

// floodBlocks returns block plaintexts full of unsigned, empty-bodied SENDs
// (42 bytes each, 194 to an 8192-byte block) to random sender IDs, and how
// many each holds. No such queue exists, so each costs the relay a dummy
// signature verification (SPEC §7) before its ERR AUTH.
func floodBlocks(bs, n int) ([][]byte, int) {
	id := make([]byte, codec.QueueIDSize)
	per := (bs - codec.TagSize) / len(tx(nil, "", id, codec.CmdSEND, nil, []byte{}))
	txs := make([][]byte, per*n)
	for i := range txs {
		_, _ = rand.Read(id)
		txs[i] = tx(nil, "", id, codec.CmdSEND, nil, []byte{})
	}
	return pack(bs, txs), per
}

// repeatBlock packs one transmission into a block as many times as it fits.
func repeatBlock(bs int, t []byte) ([]byte, int) {
	n := (bs - codec.TagSize) / len(t)
	return slices.Concat(slices.Repeat([][]byte{t}, n)...), n
}

// flood keeps one connection at a time per worker busy writing the blocks
// setup returns for it as fast as the relay reads them, while a reader counts the
// answers with count; when the relay drops the connection it dials again.
func flood(ctx context.Context, t *target, ctr *attackCounters, workers int, setup func(w int, c *rawConn) ([][]byte, int, bool), count func(rawResp)) {
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < maxRedials && ctx.Err() == nil; i++ {
				c, err := rawDial(ctx, t.src, t.addr, t.fp, ctr)
				if err != nil {
					ctr.dialFailed(ctx, err)
					continue
				}
				blocks, per, ok := setup(w, c)
				if !ok {
					c.close()
					ctr.drops.Add(1)
					continue
				}
				done := make(chan struct{})
				go func() {
					defer close(done)
					c.drain(count)
				}()
				for r := 0; r < maxRounds && ctx.Err() == nil; r++ {
					if c.sendPlain(blocks, per*len(blocks)) != nil {
						break
					}
				}
				c.close()
				<-done
				if !phaseOver(ctx) {
					ctr.drops.Add(1)
				}
			}
		}()
	}
	wg.Wait()
}

// authCounter counts ERR AUTH answers and every other answer.
type authCounter struct{ auth, other atomic.Int64 }

func (a *authCounter) count(r rawResp) {
	if r.cmd == codec.CmdERR && r.errType == codec.ErrAuth {
		a.auth.Add(1)
	} else {
		a.other.Add(1)
	}
}

func sendFlood(conns int) func(context.Context, *target, *attackCounters, *figures) {
	return func(ctx context.Context, t *target, ctr *attackCounters, fig *figures) {
		var ac authCounter
		flood(ctx, t, ctr, conns, func(_ int, c *rawConn) ([][]byte, int, bool) {
			blocks, per := floodBlocks(c.bs, 8)
			return blocks, per, true
		}, ac.count)
		fig.set("ERR AUTH answers", float64(ac.auth.Load()))
		fig.set("other answers", float64(ac.other.Load()))
	}
}

// subSteal floods SUBs of the honest recipient's queue. The attacker does
// not have the recipient key, so every one must get ERR AUTH and the honest
// client must keep its subscription (no END).
func subSteal(ctx context.Context, t *target, ctr *attackCounters, fig *figures) {
	ak, err := codec.GenerateSigner(codec.SigEd25519, 0)
	if err != nil {
		return
	}
	sub := tx(ak, "x", t.honestRID, codec.CmdSUB, nil, nil)
	var ac authCounter
	flood(ctx, t, ctr, 1, func(_ int, c *rawConn) ([][]byte, int, bool) {
		b, per := repeatBlock(c.bs, sub)
		return [][]byte{b, b, b, b}, per, true
	}, ac.count)
	fig.set("ERR AUTH answers", float64(ac.auth.Load()))
	fig.set("answers other than ERR AUTH (a stolen subscription)", float64(ac.other.Load()))
}

// amplification has each connection create a queue, store one max-size
// message in it and then SUB it again and again without ACK: every SUB is
// answered by the same message, re-delivered.
func amplification(ctx context.Context, t *target, ctr *attackCounters, fig *figures) {
	var msgs atomic.Int64
	// Each worker keeps its queue across reconnections; only that worker
	// touches its slot.
	var owned [4]struct {
		rk  *codec.Signer
		rid []byte
	}
	flood(ctx, t, ctr, len(owned), func(w int, c *rawConn) ([][]byte, int, bool) {
		o := &owned[w]
		if o.rid == nil {
			rk, err := codec.GenerateSigner(codec.SigEd25519, 0)
			if err != nil {
				return nil, 0, false
			}
			if c.send(tx(nil, "n", nil, codec.CmdNEW, rk.PublicSPKI(), nil)) != nil {
				return nil, 0, false
			}
			rs, err := c.answers(1)
			if err != nil || rs[0].cmd != codec.CmdIDS {
				return nil, 0, false
			}
			body := make([]byte, codec.MaxBody(c.bs))
			_, _ = rand.Read(body)
			if c.send(tx(nil, "s", rs[0].sid, codec.CmdSEND, nil, body)) != nil {
				return nil, 0, false
			}
			if as, err := c.answers(1); err != nil || as[0].cmd != codec.CmdOK {
				return nil, 0, false
			}
			o.rk, o.rid = rk, rs[0].rid
		}
		b, per := repeatBlock(c.bs, tx(o.rk, "a", o.rid, codec.CmdSUB, nil, nil))
		return [][]byte{b, b}, per, true
	}, func(r rawResp) {
		if r.cmd == codec.CmdMSG {
			msgs.Add(1)
		}
	})
	fig.set("MSG answers", float64(msgs.Load()))
	if out := ctr.out.Load(); out > 0 {
		fig.set("bytes out ÷ bytes in", float64(ctr.in.Load())/float64(out))
	}
}

// holdConns opens connections with completed handshakes from one address
// until the relay's max-conns (or this process's descriptors) and holds
// them to the end of the phase.
func holdConns(ctx context.Context, t *target, ctr *attackCounters, fig *figures) {
	want := int64(connTarget(t, fig))
	var held, refused atomic.Int64
	var mu sync.Mutex
	var conns []*rawConn
	var wg sync.WaitGroup
	for range t.dialers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// 200 refusals say the relay is full: more would only re-measure that.
			for i := 0; i < maxRounds && ctx.Err() == nil && held.Load() < want && refused.Load() < 200; i++ {
				c, err := rawDial(ctx, t.src, t.addr, t.fp, ctr)
				if err != nil {
					if !phaseOver(ctx) {
						refused.Add(1)
						ctr.firstErr.CompareAndSwap(nil, err.Error())
					}
					continue
				}
				if held.Add(1) > want {
					held.Add(-1)
					c.close()
					return
				}
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	fig.set("held open", float64(held.Load()))
	fig.set("refused or failed", float64(refused.Load()))
	<-ctx.Done()
	for _, c := range conns {
		c.close()
	}
}

// slowloris holds connections that never send the client hello, re-dialling
// each as soon as the relay closes it (its handshake timeout, or a refusal).
func slowloris(ctx context.Context, t *target, ctr *attackCounters, fig *figures) {
	slots := connTarget(t, fig)
	var closed, silent, failed atomic.Int64
	var wg sync.WaitGroup
	for range slots {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < maxRedials && ctx.Err() == nil; i++ {
				tc, err := dialFromSrc(ctx, t.src, t.addr)
				if err != nil {
					if !phaseOver(ctx) {
						failed.Add(1)
					}
					continue
				}
				ctr.conns.Add(1)
				stop := context.AfterFunc(ctx, func() { tc.Close() })
				n, _ := io.Copy(io.Discard, tc)
				ctr.in.Add(n)
				stop()
				tc.Close()
				if !phaseOver(ctx) {
					closed.Add(1)
					if n == 0 {
						silent.Add(1)
					}
				}
			}
		}()
	}
	wg.Wait()
	fig.set("closed by the relay (then re-dialled)", float64(closed.Load()))
	fig.set("closed before the server hello (refused)", float64(silent.Load()))
	fig.set("connects failed", float64(failed.Load()))
}

// helloFlood opens connection after connection and sends a client hello on
// each: one recorded hello replayed (the relay must open it, KEM and all,
// then finds nothing it can read), or random bytes of the right length.
// Each connection waits for the welcome block (hello accepted) or the
// relay's close (rejected), so the relay has done its work, then resets.
func helloFlood(replay bool) func(context.Context, *target, *attackCounters, *figures) {
	return func(ctx context.Context, t *target, ctr *attackCounters, fig *figures) {
		tc, err := dialFromSrc(ctx, t.src, t.addr)
		if err != nil {
			return
		}
		h, raw, err := readServerHello(tc)
		tc.Close()
		if err != nil {
			return
		}
		key, err := codec.ParseKEMPublicKey(h.Key)
		if err != nil {
			return
		}
		recorded, keys, err := codec.ClientHandshake(raw, &h, key)
		if err != nil {
			return
		}
		keys.Clear()
		want := len(raw) + int(h.BlockSize) // the server hello, then the welcome block
		var accepted, rejected atomic.Int64
		var wg sync.WaitGroup
		for range t.dialers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, want)
				hello := recorded
				for i := 0; i < maxRounds && ctx.Err() == nil; i++ {
					if !replay {
						hello = make([]byte, len(recorded))
						copy(hello, recorded[:2])
						_, _ = rand.Read(hello[2:])
					}
					tc, err := dialFromSrc(ctx, t.src, t.addr)
					if err != nil {
						ctr.dialFailed(ctx, err)
						continue
					}
					ctr.conns.Add(1)
					stop := context.AfterFunc(ctx, func() { tc.Close() })
					n, _ := tc.Write(hello)
					ctr.out.Add(int64(n))
					ctr.cmds.Add(1)
					m, _ := io.ReadFull(tc, buf)
					ctr.in.Add(int64(m))
					stop()
					tc.Close()
					switch {
					case m == want:
						accepted.Add(1)
					case !phaseOver(ctx):
						rejected.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		fig.set("hellos the relay accepted (welcome sent)", float64(accepted.Load()))
		fig.set("hellos the relay rejected (closed)", float64(rejected.Load()))
	}
}

// newReconnect sends NEW in batches on one connection until the relay
// refuses one (ERR QUOTA, its per-connection creation rate), then
// reconnects, whose fresh connection may start with a fresh allowance.
func newReconnect(ctx context.Context, t *target, ctr *attackCounters, fig *figures) {
	rk, err := codec.GenerateSigner(codec.SigEd25519, 0)
	if err != nil {
		return
	}
	batch := slices.Repeat([][]byte{tx(nil, "", nil, codec.CmdNEW, rk.PublicSPKI(), nil)}, 100)
	var created, quota, other, conns int64
	for i := 0; i < maxRedials && ctx.Err() == nil; i++ {
		c, err := rawDial(ctx, t.src, t.addr, t.fp, ctr)
		if err != nil {
			ctr.dialFailed(ctx, err)
			continue
		}
		conns++
		for r := 0; r < maxRounds && ctx.Err() == nil; r++ {
			if c.send(batch...) != nil {
				break
			}
			rs, err := c.answers(len(batch))
			refused := false
			for _, x := range rs {
				switch {
				case x.cmd == codec.CmdIDS:
					created++
				case x.cmd == codec.CmdERR && x.errType == codec.ErrQuota:
					quota++
					refused = true
				default:
					other++
				}
			}
			if err != nil || refused {
				break
			}
		}
		c.close()
	}
	fig.set("queues created", float64(created))
	fig.set("NEW refused (ERR QUOTA)", float64(quota))
	fig.set("other answers", float64(other))
	fig.set("connections used", float64(conns))
	if conns > 0 {
		fig.set("queues per connection", float64(created)/float64(conns))
	}
}

// memoryFill has 4 connections create queues, secure them and fill each to
// its quota with max-size SENDs: one pre-signed SEND per queue, sent again
// and again (a corrId may repeat), so the attacker signs once per queue.
func memoryFill(ctx context.Context, t *target, ctr *attackCounters, fig *figures) {
	var queues, full, stored, storedBytes, newRefused, capRefused atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rk, err1 := codec.GenerateSigner(codec.SigEd25519, 0)
			sk, err2 := codec.GenerateSigner(codec.SigEd25519, 0)
			if err1 != nil || err2 != nil {
				return
			}
			var c *rawConn
			defer func() {
				if c != nil {
					c.close()
				}
			}()
			var body []byte
			dials := 0
			for q := 0; q < maxRounds && dials < maxRedials && ctx.Err() == nil; q++ {
				if c == nil {
					dials++
					if c, err1 = rawDial(ctx, t.src, t.addr, t.fp, ctr); err1 != nil {
						c = nil
						ctr.dialFailed(ctx, err1)
						continue
					}
					body = make([]byte, codec.MaxBody(c.bs))
					_, _ = rand.Read(body)
				}
				sid, ok := fillSetup(c, rk, sk)
				if !ok {
					// NEW refused (the creation rate) or the connection broke: a new one.
					newRefused.Add(1)
					c.close()
					c = nil
					continue
				}
				queues.Add(1)
				send := slices.Repeat([][]byte{tx(sk, "s", sid, codec.CmdSEND, nil, body)}, 16)
				n := int64(0)
				isFull := false
				for r := 0; r < 1<<12 && !isFull && ctx.Err() == nil; r++ {
					if c.send(send...) != nil {
						break
					}
					rs, err := c.answers(len(send))
					for _, x := range rs {
						switch {
						case x.cmd == codec.CmdOK:
							n++
						case x.cmd == codec.CmdERR && x.errType == codec.ErrQuota:
							isFull = true
						}
					}
					if err != nil {
						break
					}
				}
				stored.Add(n)
				storedBytes.Add(n * int64(len(body)))
				if isFull {
					full.Add(1)
					if n == 0 {
						capRefused.Add(1) // a fresh queue refused: a relay-wide cap
					}
				}
			}
		}()
	}
	wg.Wait()
	fig.set("queues created and secured", float64(queues.Load()))
	fig.set("queues filled to quota", float64(full.Load()))
	fig.set("messages stored", float64(stored.Load()))
	fig.set("body bytes stored", float64(storedBytes.Load()))
	fig.set("fresh queues refused their first SEND (relay-wide cap)", float64(capRefused.Load()))
	fig.set("NEW refused or connection lost (reconnected)", float64(newRefused.Load()))
}

// fillSetup creates a queue on c, secures it with sk and returns its sender ID.
func fillSetup(c *rawConn, rk, sk *codec.Signer) ([]byte, bool) {
	if c.send(tx(nil, "n", nil, codec.CmdNEW, rk.PublicSPKI(), nil)) != nil {
		return nil, false
	}
	rs, err := c.answers(1)
	if err != nil || rs[0].cmd != codec.CmdIDS {
		return nil, false
	}
	if c.send(tx(rk, "k", rs[0].rid, codec.CmdKEY, sk.PublicSPKI(), nil)) != nil {
		return nil, false
	}
	if as, err := c.answers(1); err != nil || as[0].cmd != codec.CmdOK {
		return nil, false
	}
	return rs[0].sid, true
}

// sortedFigures returns the figure names in order, for the report.
func sortedFigures(m map[string]float64) []string {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}
