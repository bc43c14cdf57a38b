package smptest

import (
	"context"
	"fmt"
	"strings"
)

// WaitOutput waits until the server's standard output and standard error
// together hold substr at least n times: tests wait on log lines this way
// rather than sleeping. It fails when ctx ends or the process exits first.
func (s *Server) WaitOutput(ctx context.Context, substr string, n int) error {
	for {
		s.mu.Lock()
		got := strings.Count(s.stdout.String(), substr) + strings.Count(s.stderr.String(), substr)
		grew := s.grew
		s.mu.Unlock()
		if got >= n {
			return nil
		}
		select {
		case <-grew:
		case <-s.exited:
			// The readers finished before exited closed: the output is complete.
			if s.count(substr) >= n {
				return nil
			}
			return fmt.Errorf("smptest: smp-server exited with %q %d times in its output, want %d", substr, got, n)
		case <-ctx.Done():
			return fmt.Errorf("smptest: waiting for %q %d times in the output (seen %d): %w", substr, n, got, ctx.Err())
		}
	}
}

func (s *Server) count(substr string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Count(s.stdout.String(), substr) + strings.Count(s.stderr.String(), substr)
}
