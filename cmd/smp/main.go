// Command smp talks through an SMP relay: it creates queues and invitations,
// connects to invitations, and sends and receives end-to-end encrypted
// messages, following the seed's procedure (SPEC.md §9, §10).
//
//	smp [--state FILE] [--timeout DURATION] [--proxy URL] <command> [arguments]
//
// Run "smp help" for the commands. Keys, queue IDs, servers and
// fingerprints live in a local state file (mode 0600, written atomically),
// by default state.json in the smp folder of the user's configuration
// directory.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/smprelay/smprelay/client"
)

const usage = `smp talks through Simplex Messaging Protocol relays: it creates queues,
connects to invitations, and sends and receives end-to-end encrypted messages.

Usage:

	smp [--state FILE] [--timeout DURATION] [--proxy URL] <command> [arguments]

The commands are:

	create     create a queue to receive on and print its invitation
	connect    connect to an invitation and send the confirmation
	accept     accept a waiting confirmation and secure the queue
	send       send a message
	receive    print and acknowledge received messages
	suspend    suspend a queue you receive on
	delete     delete a queue you receive on, forget one you send to
	list       list the local queues
	chat       set up queues both ways in one flow and talk
	switch     move a contact from one relay to another

Use "smp help <command>" for more about a command.

Global flags:

	--state FILE         state file (default $SMP_STATE, else smp/state.json
	                     in the user's configuration directory)
	--timeout DURATION   limit for each network step (default 30s)
	--proxy URL          reach every relay through this SOCKS5 proxy, such as
	                     Tor's: socks5://127.0.0.1:9050 (default $SMP_PROXY);
	                     relay names are left to the proxy, never looked up
	                     here. A .onion relay needs it.

Relays:

	With a relay list, create and chat make a contact on several relays:
	every message goes on a queue on each, and is shown once, in order, so
	the contact carries on while any of them is up ('smp switch' moves it
	off one). A relay is smp://FINGERPRINT@HOST:PORT, FINGERPRINT as
	'smp-server fingerprint' prints it. The list is SMP_RELAYS; --relays
	on create and chat chooses from it:

	  --relays all        every relay in SMP_RELAYS (the default when set)
	  --relays N          the first N of them
	  --relays R1,R2,...  these relays (smp://… or the HOST:PORT of one in
	                      SMP_RELAYS)

	Without a relay list, create and chat use the one relay of --server
	(SMP_SERVER): one queue each way, as the seed describes. The side that
	joins ('chat --join', 'connect --reply') follows the creator's choice.

Environment:

	SMP_STATE        the state file
	SMP_RELAYS       relays for create and chat: smp://FINGERPRINT@HOST:PORT,
	                 separated by commas or spaces
	SMP_SERVER       server for create and chat, HOST:PORT
	SMP_FINGERPRINT  fingerprint of that server's transport key, as
	                 'smp-server fingerprint' prints it (also in the server's
	                 DATA/fingerprint file)
	SMP_PROXY        the SOCKS5 proxy, as --proxy
	SMP_CREATOR_KEY  private key file that signs the queues create and chat
	                 make on that server, as their --creator-key
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// env is what every command gets.
type env struct {
	ctx     context.Context
	st      store
	timeout time.Duration
	proxy   *url.URL // nil: relays are dialed directly
	stdin   io.Reader
	stdout  io.Writer
	stderr  io.Writer
}

// notef writes a notice for the user to standard error.
func (e *env) notef(format string, args ...any) {
	fmt.Fprintf(e.stderr, "smp: %s\n", peerText([]byte(clean(fmt.Sprintf(format, args...))), "  "))
}

// command is one subcommand: its flags are defined by flags, and run gets
// the positional arguments.
type command struct {
	name      string
	args      string // usage after the name
	short     string
	long      string
	flags     func(fs *flag.FlagSet) func(e *env, args []string) error
	minArgs   int
	maxArgs   int // -1: any
	argsNames string
}

var commands []*command

func lookup(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("smp", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	statePath := fs.String("state", "", "")
	timeout := fs.Duration("timeout", 30*time.Second, "")
	proxyFlag := fs.String("proxy", "", "")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, usage)
			return 0
		}
		fmt.Fprintf(stderr, "smp: %v\n\n%s", err, usage)
		return 2
	}
	args = fs.Args()
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	name, args := args[0], args[1:]
	switch name {
	case "help", "-h", "--help":
		if len(args) == 0 {
			fmt.Fprint(stdout, usage)
			return 0
		}
		c := lookup(args[0])
		if c == nil {
			fmt.Fprintf(stderr, "smp: unknown command %q; run 'smp help'\n", args[0])
			return 2
		}
		printHelp(c, stdout)
		return 0
	}
	c := lookup(name)
	if c == nil {
		fmt.Fprintf(stderr, "smp: unknown command %q; run 'smp help'\n", name)
		return 2
	}
	if *timeout <= 0 {
		fmt.Fprintf(stderr, "smp: --timeout %v: must be positive\n", *timeout)
		return 2
	}
	proxyURL, err := parseProxy(*proxyFlag)
	if err != nil {
		fmt.Fprintf(stderr, "smp: %s\n", clean(err.Error()))
		return 2
	}
	e := &env{ctx: ctx, timeout: *timeout, proxy: proxyURL, stdin: stdin, stdout: stdout, stderr: stderr}
	cfs := flag.NewFlagSet("smp "+c.name, flag.ContinueOnError)
	cfs.SetOutput(io.Discard)
	runFn := c.flags(cfs)
	pos, err := parseInterspersed(cfs, args)
	if errors.Is(err, flag.ErrHelp) {
		printHelp(c, stdout)
		return 0
	}
	if err == nil && (len(pos) < c.minArgs || (c.maxArgs >= 0 && len(pos) > c.maxArgs)) {
		err = fmt.Errorf("want %s", c.argsNames)
	}
	if err != nil {
		fmt.Fprintf(stderr, "smp %s: %v\nusage: smp %s %s\nRun 'smp help %s' for details.\n", c.name, err, c.name, c.args, c.name)
		return 2
	}
	path, own := *statePath, *statePath == "" && os.Getenv("SMP_STATE") == ""
	if path == "" {
		if path, err = defaultStatePath(); err != nil {
			fmt.Fprintf(stderr, "smp: %v\n", err)
			return 1
		}
	}
	e.st = store{path: path, own: own}
	if err := runFn(e, pos); err != nil {
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			return 130 // interrupted
		}
		fmt.Fprintf(stderr, "smp %s: %s\n", c.name, peerText([]byte(describe(err, *timeout)), "  "))
		return 1
	}
	return 0
}

// parseProxy returns the proxy of --proxy, else of SMP_PROXY; nil when
// neither is set.
func parseProxy(flagValue string) (*url.URL, error) {
	from, s := "--proxy", flagValue
	if s == "" {
		from, s = "SMP_PROXY", os.Getenv("SMP_PROXY")
	}
	if s == "" {
		return nil, nil
	}
	u, err := client.ParseProxy(s)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", from, err)
	}
	return u, nil
}

// parseInterspersed parses flags wherever they appear among the positional
// arguments (smp send bob --x hello), up to a "--", after which everything
// is positional.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

func printHelp(c *command, w io.Writer) {
	fmt.Fprintf(w, "usage: smp %s %s\n\n%s\n", c.name, c.args, strings.TrimSpace(c.long))
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	c.flags(fs)
	has := false
	fs.VisitAll(func(*flag.Flag) { has = true })
	if has {
		fmt.Fprintf(w, "\nFlags:\n")
		fs.SetOutput(w)
		fs.PrintDefaults()
	}
}
