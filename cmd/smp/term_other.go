//go:build !unix

package main

import "os"

// ttyColumns returns 0: the width is $COLUMNS, if set.
func ttyColumns(*os.File) int { return 0 }
