package main

import (
	"context"
	"log/slog"
	"net"

	"github.com/smprelay/smprelay/engine"
	"github.com/smprelay/smprelay/wal"
)

// metricsSource is what the metrics endpoint reads. Only aggregates are
// exported (SPEC §8): no label names a queue, a client or an address.
type metricsSource struct {
	Engine  *engine.Engine
	Server  *engine.Server
	Log     *wal.Log // nil with --store memory
	KeyType string   // the transport key's kind
	// Draining reports that a SIGTERM/SIGINT drain has begun (/healthz then
	// answers 503 so a load balancer stops sending); nil means never.
	Draining func() bool
}

// startMetrics serves /metrics and /healthz on addr until stop is called.
// It returns the bound address (the real port when addr's port is 0).
//
// Stub: the Prometheus exporter lands with issue 7's metrics work.
func startMetrics(addr string, src metricsSource, log *slog.Logger) (bound net.Addr, stop func(context.Context) error, err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	ln.Close()
	return ln.Addr(), func(context.Context) error { return nil }, nil
}
