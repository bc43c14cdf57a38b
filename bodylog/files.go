package bodylog

import (
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/smprelay/smprelay/internal/vfs"
)

// Modes of what the log creates.
const (
	dirMode  = 0o700
	fileMode = 0o600
)

// File names; part of the file format.
const (
	segmentExt  = ".body"
	tmpExt      = ".tmp"
	lockName    = "LOCK"
	summaryName = "CLEAN"
)

func segmentName(n uint64) string      { return fmt.Sprintf("%016x%s", n, segmentExt) }
func joinPath(dir, name string) string { return filepath.Join(dir, name) }
func lockPath(dir string) string       { return joinPath(dir, lockName) }

// parseSegmentName returns the number of a segment file name.
func parseSegmentName(name string) (uint64, bool) {
	base, ok := strings.CutSuffix(name, segmentExt)
	if !ok || len(base) != 16 {
		return 0, false
	}
	n, err := strconv.ParseUint(base, 16, 64)
	return n, err == nil && n != 0 && n <= maxSegmentNumber
}

// dirListing is what a log directory holds.
type dirListing struct {
	segments []uint64 // segment numbers, ascending
	tmps     []string // leftover temporary files
	summary  bool     // a clean Close left its summary
}

func listDir(fsys vfs.FS, dir string) (dirListing, error) {
	var l dirListing
	ents, err := fsys.ReadDir(dir)
	if err != nil {
		return l, err
	}
	for _, e := range ents {
		name := e.Name()
		switch n, ok := parseSegmentName(name); {
		case ok:
			l.segments = append(l.segments, n)
		case strings.HasSuffix(name, tmpExt):
			l.tmps = append(l.tmps, name)
		case name == summaryName:
			l.summary = true
		}
	}
	slices.Sort(l.segments)
	return l, nil
}

// readSummary loads the counts a clean Close wrote, then deletes the file
// (the caller syncs the directory): from now on the segments change, and
// only a later clean Close vouches for them again. A summary that does not
// parse is logged and ignored; Retain then reads every live record's header.
func (l *Log) readSummary() error {
	path := joinPath(l.dir, summaryName)
	b, err := vfs.ReadFile(l.fs, path, 1<<30)
	if err == nil {
		var counts []segmentCount
		if counts, err = decodeSummary(b); err == nil {
			l.summary = make(map[uint64]segmentCount, len(counts))
			for _, c := range counts {
				l.summary[c.number] = c
			}
		}
	}
	if err != nil {
		l.log.Warn("bodylog: ignoring the summary of the last Close; Retain will check every segment",
			"file", path, "err", err)
	}
	if err := l.fs.Remove(path); err != nil {
		return fmt.Errorf("bodylog: removing %s: %w", path, err)
	}
	return nil
}

// writeSummary records every segment's live counts for the next Open, when
// they are all known (Retain has counted the older segments). It writes
// CLEAN.tmp, fsyncs it, renames it and fsyncs the directory.
func (l *Log) writeSummary() error {
	l.eraseMu.Lock()
	defer l.eraseMu.Unlock()
	var counts []segmentCount
	l.segMu.RLock()
	for _, s := range l.segs {
		if !s.counted.Load() {
			l.segMu.RUnlock()
			return nil // Retain never ran: the next Open checks every segment
		}
		counts = append(counts, segmentCount{number: s.num, records: s.liveRecs.Load(), bytes: s.liveBytes.Load()})
	}
	l.segMu.RUnlock()
	slices.SortFunc(counts, func(a, b segmentCount) int { return cmp.Compare(a.number, b.number) })
	tmp := joinPath(l.dir, summaryName+tmpExt)
	f, err := l.fs.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, fileMode)
	if err != nil {
		return fmt.Errorf("bodylog: %w", err)
	}
	_, err = f.Write(encodeSummary(counts))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = l.fs.Rename(tmp, joinPath(l.dir, summaryName))
	}
	if err == nil {
		err = l.fs.SyncDir(l.dir)
	}
	if err != nil {
		return fmt.Errorf("bodylog: writing the summary: %w", err)
	}
	return nil
}
