package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
)

// startChild runs this binary again as a helper process (args start with
// its mode: "worker", "honest") that talks to the parent in lines: it
// returns the command, the helper's standard input and a scanner over its
// standard output. Its standard error goes to ours. what names it in errors.
func startChild(ctx context.Context, exe, what string, args ...string) (*exec.Cmd, io.WriteCloser, *bufio.Scanner, error) {
	cmd := exec.CommandContext(ctx, exe, args...)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, nil, nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, nil, fmt.Errorf("starting %s: %w", what, err)
	}
	return cmd, in, bufio.NewScanner(out), nil
}
