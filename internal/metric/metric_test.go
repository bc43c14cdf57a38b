package metric

import (
	"slices"
	"sync"
	"testing"
)

func TestLayoutIndex(t *testing.T) {
	l := &Layout{Base: 50, Exp: 4, Tail: []int64{1000, 5000}} // bounds 50 100 200 400 1000 5000 +Inf
	if got, want := l.Bounds(), []int64{50, 100, 200, 400, 1000, 5000}; !slices.Equal(got, want) {
		t.Fatalf("Bounds() = %v, want %v", got, want)
	}
	for _, tc := range []struct {
		v    int64
		want int
	}{
		{0, 0}, {1, 0}, {50, 0}, {51, 1}, {100, 1}, {101, 2}, {200, 2}, {201, 3}, {400, 3},
		{401, 4}, {1000, 4}, {1001, 5}, {5000, 5}, {5001, 6}, {1 << 62, 6},
	} {
		if got := l.index(tc.v); got != tc.want {
			t.Errorf("index(%d) = %d, want %d", tc.v, got, tc.want)
		}
	}
}

func TestLayoutValid(t *testing.T) {
	for _, tc := range []struct {
		name string
		l    Layout
		want bool
	}{
		{"doubling only", Layout{Base: 1, Exp: 14}, true},
		{"with tail", Layout{Base: 10, Exp: 3, Tail: []int64{41, 100}}, true},
		{"zero base", Layout{Base: 0, Exp: 3}, false},
		{"no doubling bucket", Layout{Base: 1, Exp: 0}, false},
		{"too many buckets", Layout{Base: 1, Exp: MaxBuckets + 1}, false},
		{"tail not above the last doubling bound", Layout{Base: 10, Exp: 3, Tail: []int64{40}}, false},
		{"tail not increasing", Layout{Base: 10, Exp: 3, Tail: []int64{100, 100}}, false},
		{"doubling overflows", Layout{Base: 1 << 40, Exp: 30}, false},
	} {
		if got := tc.l.Valid(); got != tc.want {
			t.Errorf("%s: Valid() = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestHistogramSnapshotMerges(t *testing.T) {
	l := &Layout{Base: 10, Exp: 2, Tail: []int64{100}} // 10 20 100 +Inf
	var a, b Histogram
	a.Init(l)
	b.Init(l)
	for _, v := range []int64{-5, 10, 15, 500} {
		a.Observe(v)
	}
	b.Observe(100)
	b.Observe(20)
	var s Snapshot
	a.AddTo(&s)
	b.AddTo(&s)
	if want := []uint64{2, 2, 1, 1}; !slices.Equal(s.Counts, want) {
		t.Errorf("Counts = %v, want %v", s.Counts, want)
	}
	if s.Count() != 6 {
		t.Errorf("Count() = %d, want 6", s.Count())
	}
	if s.Sum != 0+10+15+500+100+20 {
		t.Errorf("Sum = %v, want 645 (a negative value counts as 0)", s.Sum)
	}
}

// TestHistogramConcurrent: observers on several goroutines lose nothing (and
// -race finds no unsynchronised access between them and a snapshot).
func TestHistogramConcurrent(t *testing.T) {
	var h Histogram
	h.Init(&Layout{Base: 1, Exp: 8})
	const writers, each = 4, 1000
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				h.Observe(int64(w + i%3))
			}
		})
	}
	var mid Snapshot
	h.AddTo(&mid) // concurrently with the writers
	wg.Wait()
	var s Snapshot
	h.AddTo(&s)
	if s.Count() != writers*each {
		t.Fatalf("Count() = %d, want %d", s.Count(), writers*each)
	}
	if mid.Count() > s.Count() {
		t.Fatalf("a snapshot during the writes counted %d, more than the %d at the end", mid.Count(), s.Count())
	}
}

func TestInitPanicsOnInvalidLayout(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("Init accepted a layout with no bucket")
		}
	}()
	var h Histogram
	h.Init(&Layout{})
}
