package main

import (
	"fmt"
	"html"
	"math"
	"strings"
)

// series is one line of a chart. A limit series is a horizontal line at
// ys[0] across the whole x range; its xs are ignored.
type series struct {
	name   string
	xs, ys []float64
	dashed bool
	limit  bool
}

var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf"}

// lineChart renders a line chart as a standalone SVG document. With logX the
// x axis is logarithmic (values must be positive).
func lineChart(title, xlabel, ylabel string, logX bool, ss []series) string {
	const w, h, left, right, top, bottom = 720.0, 420.0, 80.0, 190.0, 40.0, 50.0
	pw, ph := w-left-right, h-top-bottom
	xmin, xmax, ymax := math.Inf(1), math.Inf(-1), 0.0
	for _, s := range ss {
		if s.limit {
			for _, y := range s.ys {
				ymax = math.Max(ymax, y)
			}
			continue
		}
		for i, x := range s.xs {
			if logX && x <= 0 {
				continue
			}
			xmin, xmax = math.Min(xmin, x), math.Max(xmax, x)
			ymax = math.Max(ymax, s.ys[i])
		}
	}
	if math.IsInf(xmin, 0) {
		xmin, xmax = 1, 2
	}
	if xmax == xmin {
		xmax = xmin * 2
		if !logX {
			xmax = xmin + 1
		}
	}
	ystep := niceStep(ymax / 5)
	ytop := math.Ceil(ymax/ystep) * ystep
	if ytop == 0 {
		ytop, ystep = 1, 0.2
	}
	fx := func(x float64) float64 {
		if logX {
			return left + pw*(math.Log(x)-math.Log(xmin))/(math.Log(xmax)-math.Log(xmin))
		}
		return left + pw*(x-xmin)/(xmax-xmin)
	}
	fy := func(y float64) float64 { return top + ph*(1-y/ytop) }

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif" font-size="12">`+"\n", w, h, w, h)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%.0f" y="22" font-size="15" font-weight="bold">%s</text>`+"\n", left, html.EscapeString(title))
	// Grid and y ticks.
	for y := 0.0; y <= ytop+ystep/2; y += ystep {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", left, fy(y), left+pw, fy(y))
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="end">%s</text>`+"\n", left-6, fy(y)+4, fmtNum(y))
	}
	// X ticks.
	for _, x := range xTicks(xmin, xmax, logX) {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#eee"/>`+"\n", fx(x), top, fx(x), top+ph)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", fx(x), top+ph+16, fmtNum(x))
	}
	fmt.Fprintf(&b, `<rect class="plot" x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="#333"/>`+"\n", left, top, pw, ph)
	fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", left+pw/2, h-12, html.EscapeString(xlabel))
	fmt.Fprintf(&b, `<text transform="translate(18 %.1f) rotate(-90)" text-anchor="middle">%s</text>`+"\n", top+ph/2, html.EscapeString(ylabel))
	for i, s := range ss {
		color := palette[i%len(palette)]
		dash := ""
		if s.dashed || s.limit {
			dash = ` stroke-dasharray="6 4"`
		}
		// Each series' marks sit in one group named by its title, apart from
		// the legend, so a reader (and the test) can tell which series drew what.
		fmt.Fprintf(&b, `<g class="series"><title>%s</title>`+"\n", html.EscapeString(s.name))
		switch {
		case s.limit && len(s.ys) > 0:
			// A limit holds at every x: drawn only between its series' own x
			// values, a series measured at one x gave it zero length.
			fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2"%s/>`+"\n", left, fy(s.ys[0]), left+pw, fy(s.ys[0]), color, dash)
		case !s.limit:
			var pts [][2]float64
			for j, x := range s.xs {
				if logX && x <= 0 {
					continue
				}
				pts = append(pts, [2]float64{fx(x), fy(s.ys[j])})
			}
			if len(pts) > 1 {
				coords := make([]string, len(pts))
				for j, pt := range pts {
					coords[j] = fmt.Sprintf("%.1f,%.1f", pt[0], pt[1])
				}
				fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2"%s points="%s"/>`+"\n", color, dash, strings.Join(coords, " "))
			}
			// Every point gets a marker, so a series of one point (no line)
			// still shows; a dashed series' markers are hollow to tell it apart.
			fill := color
			if s.dashed {
				fill = "white"
			}
			for _, pt := range pts {
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s" stroke="%s" stroke-width="1.5"/>`+"\n", pt[0], pt[1], fill, color)
			}
		}
		b.WriteString("</g>\n")
		ly := top + 10 + float64(i)*18
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2"%s/>`+"\n", left+pw+10, ly, left+pw+34, ly, color, dash)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f">%s</text>`+"\n", left+pw+40, ly+4, html.EscapeString(s.name))
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// niceStep rounds a raw step up to 1, 2 or 5 times a power of ten.
func niceStep(raw float64) float64 {
	if raw <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}

func xTicks(lo, hi float64, logX bool) []float64 {
	var t []float64
	if !logX {
		step := niceStep((hi - lo) / 6)
		for x := math.Ceil(lo/step) * step; x <= hi+step/1e6; x += step {
			t = append(t, x)
		}
		return t
	}
	base := 10.0
	if hi/lo < 1000 {
		base = 2
	}
	for e := math.Floor(math.Log(lo) / math.Log(base)); ; e++ {
		x := math.Pow(base, e)
		if x > hi*1.0001 {
			break
		}
		if x >= lo*0.9999 {
			t = append(t, x)
		}
	}
	return t
}

func fmtNum(v float64) string {
	switch {
	case v == 0:
		return "0"
	case math.Abs(v) >= 1e6:
		return fmt.Sprintf("%gM", v/1e6)
	case math.Abs(v) >= 1e4:
		return fmt.Sprintf("%gk", v/1e3)
	case math.Abs(v) >= 1:
		return fmt.Sprintf("%g", math.Round(v*100)/100)
	}
	return fmt.Sprintf("%.3g", v)
}
