package smptest

import (
	"context"
	"io"
	"maps"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// HTTPGet fetches url and returns the status and body; a transport error
// fails the test. It waits 30 s at most.
func HTTPGet(t testing.TB, url string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading the body: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

// Scrape is one parsed /metrics answer (Prometheus text format).
type Scrape map[string]*dto.MetricFamily

// ScrapeMetrics fetches and parses the /metrics page at url.
func ScrapeMetrics(t testing.TB, url string) Scrape {
	t.Helper()
	status, body := HTTPGet(t, url)
	if status != http.StatusOK {
		t.Fatalf("GET %s: status %d: %s", url, status, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parsing %s: %v\n%s", url, err, body)
	}
	return fams
}

// Metric returns the sample of family name whose labels are exactly labels
// (name, value pairs), or nil.
func (s Scrape) Metric(name string, labels ...string) *dto.Metric {
	f := s[name]
	if f == nil {
		return nil
	}
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	for _, m := range f.GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		if maps.Equal(got, want) {
			return m
		}
	}
	return nil
}

// Value returns a counter's or gauge's value; a missing sample fails the test.
func (s Scrape) Value(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	m := s.Metric(name, labels...)
	switch {
	case m == nil:
		t.Fatalf("no sample %s%v", name, labels)
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	t.Fatalf("%s%v is neither a counter nor a gauge", name, labels)
	return 0
}

// HistCount returns a histogram's sample count; a missing one fails the test.
func (s Scrape) HistCount(t testing.TB, name string) uint64 {
	t.Helper()
	m := s.Metric(name)
	if m == nil || m.Histogram == nil {
		t.Fatalf("no histogram %s", name)
	}
	return m.Histogram.GetSampleCount()
}
