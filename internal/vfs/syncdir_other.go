//go:build !unix

package vfs

// syncDir does nothing where a directory cannot be opened to be synced
// (Windows refuses FlushFileBuffers on a directory handle).
func syncDir(string) error { return nil }
