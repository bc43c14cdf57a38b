package main

import (
	"encoding/xml"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// svgDoc is the part of a chart the visibility test reads.
type svgDoc struct {
	Rects  []svgRect  `xml:"rect"`
	Groups []svgGroup `xml:"g"`
}

// svgRect keeps the attributes as text: the background's are "100%".
type svgRect struct {
	Class  string `xml:"class,attr"`
	X      string `xml:"x,attr"`
	Y      string `xml:"y,attr"`
	Width  string `xml:"width,attr"`
	Height string `xml:"height,attr"`
}

// plotArea is the plot's rectangle in user units.
type plotArea struct{ X, Y, Width, Height float64 }

type svgGroup struct {
	Class     string `xml:"class,attr"`
	Title     string `xml:"title"`
	Polylines []struct {
		Points string `xml:"points,attr"`
	} `xml:"polyline"`
	Lines []struct {
		X1 float64 `xml:"x1,attr"`
		Y1 float64 `xml:"y1,attr"`
		X2 float64 `xml:"x2,attr"`
		Y2 float64 `xml:"y2,attr"`
	} `xml:"line"`
	Circles []struct {
		Cx float64 `xml:"cx,attr"`
		Cy float64 `xml:"cy,attr"`
		R  float64 `xml:"r,attr"`
	} `xml:"circle"`
}

// marks is what one series drew inside the plot: segments of non-zero length
// and markers of non-zero radius.
type marks struct {
	segments [][4]float64
	markers  int
}

// seriesMarks parses a chart and returns, per series title, the visible marks
// it drew inside the plot area, and the plot area.
func seriesMarks(t *testing.T, svg string) (map[string]marks, plotArea) {
	t.Helper()
	var doc svgDoc
	if err := xml.Unmarshal([]byte(svg), &doc); err != nil {
		t.Fatalf("SVG does not parse: %v", err)
	}
	i := slices.IndexFunc(doc.Rects, func(r svgRect) bool { return r.Class == "plot" })
	if i < 0 {
		t.Fatal("no plot area (rect class=plot)")
	}
	var plot plotArea
	for _, f := range []struct {
		dst *float64
		src string
	}{{&plot.X, doc.Rects[i].X}, {&plot.Y, doc.Rects[i].Y}, {&plot.Width, doc.Rects[i].Width}, {&plot.Height, doc.Rects[i].Height}} {
		v, err := strconv.ParseFloat(f.src, 64)
		if err != nil {
			t.Fatalf("plot area %+v: %v", doc.Rects[i], err)
		}
		*f.dst = v
	}
	const eps = 0.05 // coordinates are written with one decimal
	inside := func(x, y float64) bool {
		return x >= plot.X-eps && x <= plot.X+plot.Width+eps && y >= plot.Y-eps && y <= plot.Y+plot.Height+eps
	}
	out := map[string]marks{}
	for _, g := range doc.Groups {
		if g.Class != "series" {
			continue
		}
		if _, dup := out[g.Title]; dup {
			t.Errorf("series %q drawn twice", g.Title)
		}
		var m marks
		addSegment := func(x1, y1, x2, y2 float64) {
			if inside(x1, y1) && inside(x2, y2) && math.Hypot(x2-x1, y2-y1) > 0 {
				m.segments = append(m.segments, [4]float64{x1, y1, x2, y2})
			}
		}
		for _, l := range g.Lines {
			addSegment(l.X1, l.Y1, l.X2, l.Y2)
		}
		for _, pl := range g.Polylines {
			var pts [][2]float64
			for _, f := range strings.Fields(pl.Points) {
				xs, ys, ok := strings.Cut(f, ",")
				x, errx := strconv.ParseFloat(xs, 64)
				y, erry := strconv.ParseFloat(ys, 64)
				if !ok || errx != nil || erry != nil {
					t.Fatalf("series %q: bad polyline point %q", g.Title, f)
				}
				pts = append(pts, [2]float64{x, y})
			}
			for j := 1; j < len(pts); j++ {
				addSegment(pts[j-1][0], pts[j-1][1], pts[j][0], pts[j][1])
			}
		}
		for _, c := range g.Circles {
			if c.R > 0 && inside(c.Cx, c.Cy) {
				m.markers++
			}
		}
		out[g.Title] = m
	}
	return out, plot
}

// TestChartsShowEverySeries renders the charts of synthetic reports, among
// them series of a single point, a grid where every series has the same
// single x, and limit lines, and checks that every series draws something
// visible in the plot and that every limit line spans the plot's width.
func TestChartsShowEverySeries(t *testing.T) {
	cdf := func(scale float64) []float64 {
		out := make([]float64, len(cdfPercentiles))
		for i, q := range cdfPercentiles {
			out[i] = scale * (1 + q/10)
		}
		return out
	}
	point := func(series string, pairs int, tput, limit float64) RelayPoint {
		return RelayPoint{Series: series, Pairs: pairs, Connections: 2 * pairs, Throughput: tput, Limit: limit,
			P50Ms: tput / 1000, P99Ms: tput / 500, CDF: cdf(tput / 1000)}
	}
	half := point("signed-ed25519-half-peak", 16, 1500, 8000)
	cases := []struct {
		name string
		rep  *Report
		want map[string][]string // chart name -> series names
	}{{
		name: "grid with single-point series",
		rep: &Report{
			Relay: []RelayPoint{
				point("signed-ed25519", 1, 1000, 8000), point("signed-ed25519", 4, 2500, 8000), point("signed-ed25519", 16, 3000, 8000),
				point("signed-rsa2048", 16, 4000, 12000),
				point("unsigned", 1, 900, 17000),
			},
			HalfPeak: &half,
			Idle:     &IdleResult{BaseRSS: 10 << 20, Steps: []IdleStep{{Conns: 500, RSS: 13 << 20}}},
		},
		want: map[string][]string{
			"throughput":           {"signed-ed25519", "signed-ed25519 limit", "signed-rsa2048", "signed-rsa2048 limit", "unsigned", "unsigned limit"},
			"latency":              {"signed-ed25519 p99", "signed-ed25519 p50", "signed-rsa2048 p99", "signed-rsa2048 p50", "unsigned p99", "unsigned p50"},
			"latency-distribution": {"peak, 16 pairs", "half of peak, paced"},
			"idle-rss":             {"VmRSS"},
		},
	}, {
		// --quick --pairs 16: every series at one x, so the x range collapses.
		name: "every series at one x",
		rep: &Report{Relay: []RelayPoint{
			point("signed-ed25519", 16, 3000, 8000),
			point("signed-rsa2048", 16, 4000, 12000),
		}},
		want: map[string][]string{
			"throughput":           {"signed-ed25519", "signed-ed25519 limit", "signed-rsa2048", "signed-rsa2048 limit"},
			"latency":              {"signed-ed25519 p99", "signed-ed25519 p50", "signed-rsa2048 p99", "signed-rsa2048 p50"},
			"latency-distribution": {"peak, 16 pairs"},
		},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			charts := tc.rep.charts()
			var names []string
			for _, ch := range charts {
				names = append(names, ch.name)
			}
			for name := range tc.want {
				if !slices.Contains(names, name) {
					t.Errorf("no %s chart among %v", name, names)
				}
			}
			for _, ch := range charts {
				want, ok := tc.want[ch.name]
				if !ok {
					t.Errorf("unexpected chart %s", ch.name)
					continue
				}
				got, plot := seriesMarks(t, ch.svg)
				if len(got) != len(want) {
					t.Errorf("%s: %d series drawn, want %d (%v)", ch.name, len(got), len(want), want)
				}
				for _, name := range want {
					m, ok := got[name]
					switch {
					case !ok:
						t.Errorf("%s: series %q not drawn", ch.name, name)
					case len(m.segments) == 0 && m.markers == 0:
						t.Errorf("%s: series %q has no visible mark in the plot", ch.name, name)
					case strings.HasSuffix(name, " limit"):
						if err := spansPlot(m, plot); err != nil {
							t.Errorf("%s: %q: %v", ch.name, name, err)
						}
					}
				}
			}
		})
	}
}

// spansPlot says whether m holds a horizontal segment from the plot's left
// edge to its right edge.
func spansPlot(m marks, plot plotArea) error {
	const eps = 0.05
	for _, s := range m.segments {
		left, right := math.Min(s[0], s[2]), math.Max(s[0], s[2])
		if s[1] == s[3] && math.Abs(left-plot.X) < eps && math.Abs(right-(plot.X+plot.Width)) < eps {
			return nil
		}
	}
	return fmt.Errorf("no horizontal line across the plot (x %.1f to %.1f) among %v", plot.X, plot.X+plot.Width, m.segments)
}

// TestSinglePointMarked checks lineChart on its own: a solid and a dashed
// series of one point each get exactly one marker inside the plot.
func TestSinglePointMarked(t *testing.T) {
	svg := lineChart("t", "x", "y", false, []series{
		{name: "solid", xs: []float64{5}, ys: []float64{2}},
		{name: "dashed", xs: []float64{5}, ys: []float64{1}, dashed: true},
	})
	got, _ := seriesMarks(t, svg)
	for _, name := range []string{"solid", "dashed"} {
		if got[name].markers != 1 {
			t.Errorf("series %q: %d markers in the plot, want 1", name, got[name].markers)
		}
	}
}
