package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/smprelay/smprelay/client"
	"github.com/smprelay/smprelay/codec"
)

// The seed's procedure with the library: Alice creates a queue and hands the
// invitation to Bob, who confirms; Alice secures the queue; Bob sends; Alice
// receives and acknowledges. In real use Alice and Bob are two programs and
// the invitation travels out of band.
func Example() {
	ctx := context.Background()
	relay := client.Server{Addr: "127.0.0.1:5223", Fingerprint: "base64 fingerprint from DATA/fingerprint"}

	// Alice.
	alice, err := client.DialServer(ctx, relay, client.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer alice.Close()
	q, err := client.CreateQueue(ctx, alice, codec.KEMMLKEM768X25519)
	if err != nil {
		log.Fatal(err)
	}
	inv, err := q.Invitation()
	if err != nil {
		log.Fatal(err)
	}
	uri := inv.URI() // give this to Bob

	// Bob.
	bobInv, err := codec.ParseInvitation(uri)
	if err != nil {
		log.Fatal(err)
	}
	s, err := client.NewSenderQueue(&bobInv)
	if err != nil {
		log.Fatal(err)
	}
	bob, err := client.DialServer(ctx, s.Server, client.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer bob.Close()
	if err := s.Confirm(ctx, bob, []byte("Bob")); err != nil {
		log.Fatal(err)
	}

	// Alice: her Conn is subscribed since NEW; confirmations that do not open
	// (forgeries) are dropped.
	for e := range alice.Events() {
		if e.Kind != client.EventMessage {
			continue
		}
		if _, err := q.Accept(ctx, alice, e.Message); errors.Is(err, client.ErrDropped) {
			continue
		} else if err != nil {
			log.Fatal(err)
		}
		break
	}

	// Bob sends; Alice receives.
	if err := s.Send(ctx, bob, []byte("hello")); err != nil {
		log.Fatal(err)
	}
	// Alice shows a message only if Bob's key signed it and it is newer than
	// the last one shown; she stores q (its LastSeq) before acknowledging.
	for e := range alice.Events() {
		if e.Kind != client.EventMessage {
			continue
		}
		r := q.Receive(e.Message)
		switch {
		case r.Drop == client.DropNone:
			if r.FirstMissing > 0 {
				fmt.Printf("messages %d…%d are missing\n", r.FirstMissing, r.Seq-1)
			}
			fmt.Printf("%s\n", r.Body)
		case r.Drop != client.DropRedelivered:
			log.Printf("dropped a message: %v", r.Err)
		}
		if _, err := q.Ack(ctx, alice); err != nil {
			log.Fatal(err)
		}
		if r.Drop == client.DropNone {
			break
		}
	}
}

// Many goroutines can share one Conn: their commands are pipelined, packed
// into blocks together and matched to their answers by correlation ID.
func ExampleConn_Send() {
	ctx := context.Background()
	c, err := client.Dial(ctx, "127.0.0.1:5223", client.Options{Fingerprint: "base64 fingerprint"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	sid := make([]byte, codec.QueueIDSize) // from an invitation
	errs := make(chan error, 100)
	for i := range 100 {
		go func() { errs <- c.Send(ctx, sid, nil, fmt.Appendf(nil, "message %d", i)) }()
	}
	for range 100 {
		if err := <-errs; errors.Is(err, codec.ErrAuth) {
			log.Print("the queue is secured or gone")
		}
	}
}

// Events can go to a callback instead of the channel; it runs on one
// goroutine, in order, and may call the Conn.
func ExampleOptions_onEvent() {
	ctx := context.Background()
	opts := client.Options{
		Fingerprint: "base64 fingerprint",
		OnEvent: func(e client.Event) {
			switch e.Kind {
			case client.EventDisconnected:
				log.Printf("connection lost, reconnecting: %v", e.Err)
			case client.EventSubscriptionLost:
				log.Printf("the server no longer serves a queue: %v", e.Err)
			}
		},
	}
	c, err := client.Dial(ctx, "127.0.0.1:5223", opts)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
}
