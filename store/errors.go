package store

import "errors"

// errNoBodies answers ReadBody on a store that never keeps bodies.
var errNoBodies = errors.New("store: this store keeps no message bodies")
