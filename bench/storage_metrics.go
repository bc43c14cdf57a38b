package main

import (
	"bufio"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// metricsClient reads the relay's metrics endpoint; a scrape of a relay on
// loopback that takes longer than this is a relay in trouble.
var metricsClient = &http.Client{Timeout: 30 * time.Second}

// scrapeMetrics reads http://addr/metrics (Prometheus text format) and
// returns each metric's value summed over its label sets: the figures the
// storage scenarios read are totals.
func scrapeMetrics(addr string) (map[string]float64, error) {
	resp, err := metricsClient.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	return parseMetrics(bufio.NewScanner(resp.Body))
}

// parseMetrics sums the samples of the text format by metric name; a
// histogram's _bucket, _sum and _count are names of their own.
func parseMetrics(sc *bufio.Scanner) (map[string]float64, error) {
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	out := map[string]float64{}
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest := line, ""
		if i := strings.IndexByte(line, '{'); i >= 0 {
			// Label values may hold spaces and braces: the sample follows the
			// last closing brace.
			j := strings.LastIndexByte(line, '}')
			if j < i {
				continue
			}
			name, rest = line[:i], line[j+1:]
		} else if n, r, ok := strings.Cut(line, " "); ok {
			name, rest = n, r
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		out[name] += v
	}
	return out, sc.Err()
}

// cacheReading is the store's cache counters at one scrape.
type cacheReading struct {
	hits, misses float64
	names        string // the counters read, for the report
}

// cacheCounterNames are the names the disk store's cache counters are
// looked for under, first match wins; failing those, any pair of metrics
// named *cache_hits_total and *cache_misses_total with the same prefix.
var cacheCounterNames = [][2]string{{"smp_store_cache_hits_total", "smp_store_cache_misses_total"}}

// cacheCounters scrapes the relay at addr for the store's cache counters;
// an error says why there are none (no endpoint, or no such counters).
func cacheCounters(addr string) (cacheReading, error) {
	if addr == "" {
		return cacheReading{}, fmt.Errorf("no metrics endpoint")
	}
	m, err := scrapeMetrics(addr)
	if err != nil {
		return cacheReading{}, err
	}
	return findCacheCounters(m)
}

// findCacheCounters picks the cache counters out of a scrape.
func findCacheCounters(m map[string]float64) (cacheReading, error) {
	for _, n := range cacheCounterNames {
		h, okh := m[n[0]]
		x, okm := m[n[1]]
		if okh && okm {
			return cacheReading{hits: h, misses: x, names: n[0] + ", " + n[1]}, nil
		}
	}
	for _, name := range slices.Sorted(maps.Keys(m)) {
		h := m[name]
		if prefix, ok := strings.CutSuffix(name, "cache_hits_total"); ok {
			if x, ok := m[prefix+"cache_misses_total"]; ok {
				return cacheReading{hits: h, misses: x, names: name + ", " + prefix + "cache_misses_total"}, nil
			}
		}
	}
	return cacheReading{}, fmt.Errorf("the relay exports no store cache counters (%s or *cache_hits_total with *cache_misses_total)", cacheCounterNames[0][0])
}
