package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/smprelay/smprelay/client"
)

// HandshakePoint is the handshakes scenario for one KEM kind.
type HandshakePoint struct {
	KEM           string  `json:"kem"`
	Dialers       int     `json:"dialers"`
	Seconds       float64 `json:"seconds"`
	Handshakes    int64   `json:"handshakes"`
	PerSecond     float64 `json:"perSecond"`
	ServerCPUPer  float64 `json:"serverCpuPerHandshakeUs"`
	ServerBound   float64 `json:"serverBoundPerSecond"` // cores ÷ server CPU per handshake
	CryptoPer     float64 `json:"cryptoPerHandshakeUs"`
	CPUOverCrypto float64 `json:"serverCpuOverCrypto"`
	Limit         float64 `json:"limitPerSecond"`
	OverLimit     float64 `json:"perSecondOverLimit"`
	OtherCores    float64 `json:"otherProcessesCores"` // as in RelayPoint
	Errors        int64   `json:"errors"`
}

// runHandshakes has dialers goroutines connect, complete the handshake
// (through the welcome block) and close, for d.
func runHandshakes(ctx context.Context, srv *server, kem string, dialers int, d time.Duration, p *progress) (HandshakePoint, error) {
	hp := HandshakePoint{KEM: kem, Dialers: dialers}
	var n, errs atomic.Int64
	var dl dialer
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	opts := benchOptions(srv.Fingerprint, &dl, nil)
	opts.Timeout = 30 * time.Second
	u0, err := srv.usage()
	if err != nil {
		return hp, err
	}
	self0, _ := procUsage(os.Getpid())
	busy0 := machineBusy()
	stop := make(chan struct{})
	go p.tick(stop, func() (float64, string) {
		el := time.Since(u0.At)
		return el.Seconds(), fmt.Sprintf("%.0f/s", float64(n.Load())/el.Seconds())
	})
	var wg sync.WaitGroup
	for range dialers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				c, err := client.Dial(ctx, srv.Addr, opts)
				if err != nil {
					if ctx.Err() == nil {
						errs.Add(1)
					}
					continue
				}
				n.Add(1)
				c.Close()
			}
		}()
	}
	sleepCtx(ctx, d)
	u1, err := srv.usage()
	self1, _ := procUsage(os.Getpid())
	busy1 := machineBusy()
	count := n.Load()
	cancel()
	wg.Wait()
	close(stop)
	if err != nil {
		return hp, err
	}
	hp.Seconds = u1.At.Sub(u0.At).Seconds()
	hp.Handshakes = count
	hp.PerSecond = float64(count) / hp.Seconds
	hp.Errors = errs.Load()
	other := (busy1 - busy0) - (u1.CPU - u0.CPU) - (self1.CPU - self0.CPU)
	hp.OtherCores = max(0, other.Seconds()/hp.Seconds)
	if count > 0 {
		hp.ServerCPUPer = (u1.CPU - u0.CPU).Seconds() / float64(count) * 1e6
		if hp.ServerCPUPer > 0 { // /proc counts 10 ms ticks: a few handshakes may read 0
			hp.ServerBound = float64(runtime.NumCPU()) * 1e6 / hp.ServerCPUPer
		}
	}
	return hp, nil
}

func (hp *HandshakePoint) withCrypto(cc *CryptoCosts) {
	if cc == nil {
		return
	}
	cy := cc.cycle("handshake-" + hp.KEM)
	if cy.NsPerOp == 0 {
		return
	}
	hp.CryptoPer = cy.NsPerOp / 1e3
	hp.CPUOverCrypto = hp.ServerCPUPer / hp.CryptoPer
	hp.Limit = cy.LimitOps
	hp.OverLimit = hp.PerSecond / hp.Limit
}
