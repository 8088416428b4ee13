package metrics_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/flashgate/flashgate/events"
	"github.com/flashgate/flashgate/metrics"
	dto "github.com/prometheus/client_model/go"
)

// TestDashboardNamesRealMetrics: every flashgate_* series the sample Grafana
// dashboard queries is one the program exports.
func TestDashboardNamesRealMetrics(t *testing.T) {
	b, err := os.ReadFile("../deploy/grafana/flashgate.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("dashboard is not JSON: %v", err)
	}
	m := metrics.New()
	m.Gauges(func() []metrics.SaleFigures { return []metrics.SaleFigures{{Sale: "s"}} },
		func() (float64, bool) { return 0, true }, func() bool { return true }, func() int64 { return 0 })
	m.Answer("token", "decided")
	m.RateLimit("session", "allowed")
	// Vectors are gathered only once they hold a sample: make one each.
	m.Commit(&events.DecisionBatch{Sale: "s", Events: []events.Event{{Type: events.TypeTokenIssued, Data: &events.TokenIssued{}}}}, 1, time.Millisecond)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /x", func(http.ResponseWriter, *http.Request) {})
	m.Middleware(mux).ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/x", nil))
	fams, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{}
	for _, f := range fams {
		known[f.GetName()] = true
		if f.GetType() == dto.MetricType_HISTOGRAM {
			for _, sfx := range []string{"_bucket", "_sum", "_count"} {
				known[f.GetName()+sfx] = true
			}
		}
	}
	name := regexp.MustCompile(`flashgate_[a-z_]+`)
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, n := range name.FindAllString(tg.Expr, -1) {
				if !known[n] && !strings.HasSuffix(n, "_") {
					t.Errorf("panel %q queries %s, which flashgate does not export", p.Title, n)
				}
			}
		}
	}
}
