//go:build !unix

package atomicfile

// SyncDir does nothing where a directory cannot be opened to be synced.
func SyncDir(string) error { return nil }
