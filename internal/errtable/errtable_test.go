package errtable

import (
	"testing"

	"github.com/smprelay/smprelay/codec"
)

// The table has every error of codec (SPEC §6's responses) and each row a
// unique name and at least one case, so that ranging over it misses none.
func TestRowsCoverEveryError(t *testing.T) {
	seen := map[codec.Error]bool{}
	names := map[string]bool{}
	for _, r := range Rows {
		if names[r.Name] {
			t.Errorf("row %q twice", r.Name)
		}
		names[r.Name] = true
		seen[r.Err] = true
		if len(r.Cases) == 0 {
			t.Errorf("row %q has no case", r.Name)
		}
		if r.NotEngine != "" && r.NotRelay != "" {
			t.Errorf("row %q can be provoked nowhere", r.Name)
		}
		cases := map[string]bool{}
		for _, c := range r.Cases {
			if cases[c.Name] || c.Name == "" || c.Tx == nil {
				t.Errorf("row %q: case %q is unnamed, has no transmission or is there twice", r.Name, c.Name)
			}
			cases[c.Name] = true
		}
	}
	for e := codec.ErrSyntaxStructure; e <= codec.ErrInternal; e++ {
		if !seen[e] {
			t.Errorf("no row for ERR %v", e)
		}
	}
}
