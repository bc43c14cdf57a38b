package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"time"

	"github.com/smprelay/smprelay/client"
	"github.com/smprelay/smprelay/internal/atomicfile"
)

// stateVersion is the format of the state file; a file of another version is
// refused rather than misread. Version 2 added Contact.Multi (issue 17); a
// version 1 file is read as it is — each of its contacts is a seed contact
// (one Recv, one Send), which version 2 keeps unchanged — and written back as
// version 2 on the next change.
const (
	stateVersion    = 2
	oldStateVersion = 1
)

// State is everything smp keeps between runs: for each contact (a name the
// user chose), the queue it receives on and the queue it sends to, with
// their keys. It holds private keys: the file is mode 0600.
type State struct {
	Version  int                 `json:"version"`
	Contacts map[string]*Contact `json:"contacts"`
}

// Contact is one correspondent: Recv is a queue the user created and
// receives on (the seed's Alice side), Send one they connected to (Bob's
// side). A chat has both.
type Contact struct {
	Created time.Time              `json:"created"`
	Recv    *client.RecipientQueue `json:"recv,omitempty"`
	Send    *client.SenderQueue    `json:"send,omitempty"`
	// SendStatus is what the server's answers showed about Send: empty
	// (state files from before it, too) while only the confirmation is
	// known to have arrived, then sendSecured or sendRefused.
	SendStatus string `json:"sendStatus,omitempty"`
	// Multi, when set, makes this a contact on several relays
	// (client.ContactState, docs/contacts.md) and Recv and Send are unused:
	// 'smp create' and 'smp chat' make one when a relay list is configured
	// (see relays.go). Nil for a seed contact, the only kind in version 1.
	Multi *client.ContactState `json:"contact,omitempty"`
	// PendingReply is the URI of the reply queue a joiner offered, while the
	// creator's confirmation of it (with multiMarker) is still to be sent:
	// set once the queue of the invitation is secured, so that a relay down
	// then loses no step (finishReply).
	PendingReply string `json:"pendingReply,omitempty"`
}

// Values of Contact.SendStatus.
const (
	sendSecured = "secured" // the server took a signed message: the owner secured the queue with our key
	sendRefused = "refused" // after that, ERR AUTH: the owner suspended or deleted the queue
)

// names sorts the contact names.
func (s *State) names() []string {
	out := make([]string, 0, len(s.Contacts))
	for n := range s.Contacts {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// contact returns the named contact or an error that says how to list them.
func (s *State) contact(name string) (*Contact, error) {
	c := s.Contacts[name]
	if c == nil {
		return nil, fmt.Errorf("no contact %q in the state file (see 'smp list')", name)
	}
	return c, nil
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

func checkName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("contact name %q: use 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit", name)
	}
	return nil
}

// store is the state file at path. own says that path is the default one,
// in a folder that belongs to smp alone (see checkFolder).
type store struct {
	path string
	own  bool
}

// defaultStatePath is $SMP_STATE, else state.json in the smp folder of the
// user's configuration directory.
func defaultStatePath() (string, error) {
	if p := os.Getenv("SMP_STATE"); p != "" {
		return p, nil
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("finding the state file: %w (set --state or SMP_STATE)", err)
	}
	return filepath.Join(dir, "smp", "state.json"), nil
}

// load reads the state; a missing file is an empty state.
func (st store) load() (*State, error) {
	if err := checkFolder(filepath.Dir(st.path), st.own); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(st.path)
	if errors.Is(err, fs.ErrNotExist) {
		return &State{Version: stateVersion, Contacts: map[string]*Contact{}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the state: %w", err)
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("state file %s: %w", st.path, err)
	}
	switch s.Version {
	case stateVersion:
	case oldStateVersion:
		s.Version = stateVersion // its contacts are seed contacts, kept as they are
	default:
		return nil, fmt.Errorf("state file %s: version %d, this smp reads %d and %d", st.path, s.Version, oldStateVersion, stateVersion)
	}
	if s.Contacts == nil {
		s.Contacts = map[string]*Contact{}
	}
	return &s, nil
}

// update applies fn to the state as it is on disk now, under a lock, and
// writes the result atomically. Commands do their network work outside
// update and record the outcome inside it, so that a long-running command
// (receive --follow) does not block the others.
func (st store) update(fn func(*State) error) error {
	if err := os.MkdirAll(filepath.Dir(st.path), 0o700); err != nil {
		return fmt.Errorf("creating the state folder: %w", err)
	}
	if err := checkFolder(filepath.Dir(st.path), st.own); err != nil {
		return err
	}
	unlock, err := lockFile(st.path + ".lock")
	if err != nil {
		return err
	}
	defer unlock()
	s, err := st.load()
	if err != nil {
		return err
	}
	if err := fn(s); err != nil {
		return err
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding the state: %w", err)
	}
	return writeFileAtomic(st.path, append(b, '\n'), 0o600)
}

// writeFileAtomic replaces path with b (internal/atomicfile: temp file,
// fsync, rename, fsync the folder), so a crash leaves the old state or the new.
func writeFileAtomic(path string, b []byte, mode fs.FileMode) error {
	if err := atomicfile.Write(path, b, mode); err != nil {
		return fmt.Errorf("writing the state: %w", err)
	}
	return nil
}
