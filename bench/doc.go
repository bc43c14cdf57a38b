// Command bench measures how many people one machine running smp-server can
// serve, against this machine's cryptographic limit:
//
//	go run ./bench                         # the standard suite (make bench)
//	go run ./bench --quick                 # the short suite (make bench-quick)
//	go run ./bench --scenarios relay-signed --pairs 1,8 --duration 5s
//	go run ./bench --scenarios hostile     # attacks, one at a time (make bench-hostile)
//	go run ./bench --scenarios storage-messages,storage-queues  # memory and restart (make bench-storage)
//	go run ./bench --help
//
// It builds smp-server itself, starts it on 127.0.0.1:0 with a fresh data
// directory for each scenario, and drives it over loopback from this process
// (and, for idle connections, from worker processes that are this binary run
// as "bench worker"; the hostile scenario's honest client, from one run as
// "bench honest"). Only 127.0.0.x addresses are ever used.
//
// Scenarios: crypto-limit (in-process per-core cost of the cryptography every
// message and handshake must pay, and the limits it implies), relay-signed
// (secured queues, SEND → MSG → ACK over a grid of connection counts, Ed25519
// and RSA-2048, then a paced run at half of peak), relay-unsigned (the same
// before KEY), handshakes (per KEM kind), idle-connections (server RSS per
// subscribed idle connection up to the open-file limit) and fsync (relay-signed
// under each --fsync mode). Outside the default suite, hostile (hostile.go,
// attacks.go) runs a baseline and then each attack of issue 12 alone while an
// honest client on 127.0.0.2 measures its latency; attackers use raw
// connections (rawconn.go) from 127.0.0.10 and up. Also outside it, the
// storage scenarios (storage.go; issue 14) run relays with --store
// --storage-store: storage-messages fills messages into secured queues in
// steps, reading the relay's settled RSS after each (bytes per stored
// message), restarts it on the same data directory (time to "listening on"
// against an empty relay's, RSS) and drains every queue (the cold read:
// msg/s, and the store's cache hit rate from the metrics endpoint);
// storage-queues does the same with empty queues (bytes per queue), and
// optionally small messages after them for the large restart case.
//
// Server CPU and memory are read from /proc/<pid>/stat (utime+stime) and
// /proc/<pid>/status (VmRSS) before and after each timed phase, so the load
// generator's own cost does not count against the server. Transmissions are
// signed before the timed phase (client.Prepared).
//
// Pinning (--pin, on by default; pin.go): after crypto-limit, which measures
// on every CPU, the CPUs this process may use are split into server cores
// (the first half, at least one) and generator cores (the rest): 1 + 1 on a
// 2-CPU machine. Every smp-server runs on the server cores, this process and
// its workers on the others, and the relay-signed and fsync points add the
// server-only ratios: msg/s per server core against the stdlib crypto limit
// of one core (1 s ÷ the one-core crypto cost of the signed cycle), and
// non-crypto server CPU per delivered message (server CPU per message less
// that cost). With one CPU pinning is off, with a note in the report;
// --pin=false shares every core between server and load generator, as before.
//
// Results go to --out, by default bench/results/<date>-<commit>.json (every
// figure), a Markdown summary beside it (also printed at the end, followed on
// stderr by the path it was written to) and SVG charts. bench/results is gitignored, so runs leave the tree clean; the
// reference runs the README quotes are committed in bench/reference.
//
// Concurrency: each scenario runs alone; within one, every queue has one
// sender goroutine and one acknowledging goroutine, and per-connection
// counters are written by the connection's event goroutine and read by the
// scenario only after its timed phase (or atomically during it).
package main
