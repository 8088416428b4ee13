package loadgen

import (
	"fmt"
	"html"
	"html/template"
	"io"
	"math"
	"sort"
	"strings"
)

// WriteHTML writes the report as one self-contained HTML page: the
// summary, a latency-over-time chart (p50 and p99 of the main kind each
// second) and a throughput-over-time chart as inline SVG, and the tables.
// It loads nothing from anywhere.
func (rep *Report) WriteHTML(w io.Writer) error {
	// The last second is often a sliver (the answers in flight when the
	// phase ended): its rate is of the part it covers, and a sliver under
	// a quarter of a second is left out rather than drawn as a cliff.
	series := rep.Series
	span := func(t int) float64 { return math.Min(1, rep.DurationSeconds-float64(t)) }
	if n := len(series); n > 1 && span(series[n-1].T) < 0.25 {
		series = series[:n-1]
	}
	p50 := make([]float64, len(series))
	p99 := make([]float64, len(series))
	rps := make([]float64, len(series))
	errs := make([]float64, len(series))
	for i, s := range series {
		d := math.Max(span(s.T), 0.25)
		p50[i], p99[i], rps[i], errs[i] = s.P50, s.P99, float64(s.Requests)/d, float64(s.Errors)/d
	}
	var text strings.Builder
	rep.WriteText(&text)
	kinds := make([]string, 0, len(rep.Kinds))
	for k := range rep.Kinds {
		kinds = append(kinds, k)
	}
	sort.Slice(kinds, func(i, j int) bool { return kindOrder(kinds[i]) < kindOrder(kinds[j]) })
	type kindRow struct {
		Name string
		*KindReport
		StatusText string
	}
	rows := make([]kindRow, len(kinds))
	for i, k := range kinds {
		rows[i] = kindRow{k, rep.Kinds[k], statusText(rep.Kinds[k].Status)}
	}
	return reportPage.Execute(w, map[string]any{
		"R":       rep,
		"Kinds":   rows,
		"Text":    text.String(),
		"Latency": template.HTML(chart("Latency of "+rep.MainKind+" requests, each second (ms)", []line{{"p50", "#2b6cb0", p50}, {"p99", "#c53030", p99}})),
		"Rate":    template.HTML(chart("Throughput: "+rep.MainKind+" answers a second", []line{{"requests/s", "#2f855a", rps}, {"errors/s", "#c05621", errs}})),
	})
}

// line is one line of a chart: a value a second.
type line struct {
	name, color string
	v           []float64
}

// chart draws lines over seconds as an SVG.
func chart(title string, lines []line) string {
	const w, h, left, right, top, bottom = 760.0, 240.0, 60.0, 20.0, 30.0, 30.0
	n, top1 := 0, 0.0
	for _, l := range lines {
		n = max(n, len(l.v))
		for _, v := range l.v {
			top1 = math.Max(top1, v)
		}
	}
	ymax := niceCeil(top1)
	x := func(i int) float64 {
		if n <= 1 {
			return left
		}
		return left + float64(i)*(w-left-right)/float64(n-1)
	}
	y := func(v float64) float64 { return h - bottom - v/ymax*(h-top-bottom) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %g %g" width="%g" height="%g" role="img" aria-label="%s">`, w, h, w, h, html.EscapeString(title))
	fmt.Fprintf(&b, `<text x="%g" y="18" font-size="14" font-weight="bold">%s</text>`, left, html.EscapeString(title))
	for i := 0; i <= 4; i++ {
		v := ymax * float64(i) / 4
		fmt.Fprintf(&b, `<line x1="%g" x2="%g" y1="%.1f" y2="%.1f" stroke="#ddd"/>`, left, w-right, y(v), y(v))
		fmt.Fprintf(&b, `<text x="%g" y="%.1f" font-size="11" text-anchor="end">%s</text>`, left-6, y(v)+4, axisText(v))
	}
	step := max(1, n/10)
	for i := 0; i < n; i += step {
		fmt.Fprintf(&b, `<text x="%.1f" y="%g" font-size="11" text-anchor="middle">%ds</text>`, x(i), h-10, i)
	}
	for k, l := range lines {
		pts := make([]string, len(l.v))
		for i, v := range l.v {
			pts[i] = fmt.Sprintf("%.1f,%.1f", x(i), y(v))
		}
		if len(pts) == 1 {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(0)+4, y(l.v[0])))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`, l.color, strings.Join(pts, " "))
		fmt.Fprintf(&b, `<rect x="%g" y="8" width="12" height="4" fill="%s"/><text x="%g" y="14" font-size="12">%s</text>`,
			w-right-200+float64(k)*100, l.color, w-right-184+float64(k)*100, html.EscapeString(l.name))
	}
	if n == 0 {
		fmt.Fprintf(&b, `<text x="%g" y="%g" font-size="12">no data</text>`, w/2, h/2)
	}
	b.WriteString(`</svg>`)
	return b.String()
}

// niceCeil is a round number at or above v, for an axis.
func niceCeil(v float64) float64 {
	if v <= 0 || math.IsNaN(v) || math.IsInf(v, 0) {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

func axisText(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v >= 1000:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.0f", v)
	case v >= 1:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

var reportPage = template.Must(template.New("report").Funcs(template.FuncMap{
	"pct": func(v float64) string { return fmt.Sprintf("%.0f%%", v*100) },
	"f1":  func(v float64) string { return fmt.Sprintf("%.1f", v) },
	"ms":  msText,
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>flashgate bench: {{.R.Scenario}}, {{.R.Model}} model</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:2em auto;max-width:800px;padding:0 1em;color:#1a202c}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #cbd5e0;padding:.25em .6em;text-align:right}
th{background:#edf2f7}td:first-child,th:first-child{text-align:left}
.bad{color:#c53030;font-weight:bold}.ok{color:#2f855a;font-weight:bold}
svg{max-width:100%;height:auto;font-family:system-ui,sans-serif}
pre{background:#f7fafc;padding:1em;white-space:pre-wrap;font-size:12px}
table.summary td{text-align:left}
</style></head><body>
<h1>flashgate bench: {{.R.Scenario}}, {{.R.Model}} model</h1>
<table class="summary">
<tr><th>server</th><td>{{.R.URL}}{{if .R.Embedded}} (embedded in the generator's process){{end}}, sale {{.R.Sale}}</td></tr>
<tr><th>load</th><td>{{if eq .R.Model "open"}}{{.R.Rate}} iterations/s, at most {{.R.MaxInFlight}} in flight{{else}}{{.R.VUs}} virtual users{{end}}</td></tr>
<tr><th>measured</th><td>{{.R.Iterations}} iterations in {{f1 .R.DurationSeconds}} s after a {{.R.WarmupSeconds}} s warm-up</td></tr>
<tr><th>throughput</th><td>{{printf "%.0f" .R.Throughput}} {{.R.MainKind}} requests/s</td></tr>
<tr><th>latency ({{.R.MainKind}})</th><td>p50 {{ms .R.Latency.P50}}, p99 {{ms .R.Latency.P99}}, p99.9 {{ms .R.Latency.P999}}, max {{ms .R.Latency.Max}}</td></tr>
<tr><th>{{if .R.Embedded}}process CPU (generator + server){{else}}generator CPU{{end}}</th><td>{{pct .R.GeneratorCPU}} of {{.R.NumCPU}} CPUs{{if ge .R.MachineCPU 0.0}}; machine {{pct .R.MachineCPU}} busy{{end}}</td></tr>
{{with .R.ServerCPU}}<tr><th>server CPU</th><td>{{printf "%.2f" .Cores}} CPUs (pids {{range $i, $p := .PIDs}}{{if $i}},{{end}}{{$p}}{{end}}), {{f1 .PerRequestMicros}} µs per {{$.R.MainKind}} request measured (all of its work)</td></tr>
{{end}}<tr><th>bottleneck</th><td>{{if .R.Bottleneck}}<span class="bad">the generator likely limited the run: {{.R.Bottleneck}}</span>{{else}}nothing says the generator limited the run{{end}}</td></tr>
<tr><th>verdict</th><td>{{if not .R.Verdict.Checked}}not checked{{else if .R.Verdict.OK}}<span class="ok">correct</span>{{else}}<span class="bad">WRONG: {{range .R.Verdict.Problems}}{{.}}; {{end}}</span>{{end}}</td></tr>
</table>
{{range .R.Notes}}<p>Note: {{.}}</p>{{end}}
<h2>Latency over time</h2>
{{.Latency}}
<h2>Throughput over time</h2>
{{.Rate}}
<h2>Requests by kind</h2>
<table><tr><th>kind</th><th>requests</th><th>per s</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th><th>mean</th><th>no answer</th><th>status</th></tr>
{{range .Kinds}}<tr><td>{{.Name}}</td><td>{{.Requests}}</td><td>{{printf "%.0f" .Throughput}}</td><td>{{ms .Latency.P50}}</td><td>{{ms .Latency.P90}}</td><td>{{ms .Latency.P99}}</td><td>{{ms .Latency.P999}}</td><td>{{ms .Latency.Max}}</td><td>{{ms .Latency.Mean}}</td><td>{{.Errors}}</td><td>{{.StatusText}}</td></tr>
{{end}}</table>
{{if eq .R.Model "open"}}<p>Latencies are measured from each iteration's intended start (coordinated-omission safe); the text below also has the service time from the actual send.</p>{{end}}
<h2>The whole report</h2>
<pre>{{.Text}}</pre>
</body></html>
`))
