// Package metrics holds flashgate's Prometheus metrics, on a registry the
// program builds (no global state), and the HTTP middleware that measures
// requests. Label values are bounded: routes are mux patterns, never raw
// paths; no shopper, token or request ids are ever labels.
package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/flashgate/flashgate/events"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

const ns = "flashgate"

// Metrics is one process's metrics.
type Metrics struct {
	Registry *prometheus.Registry

	httpRequests  *prometheus.CounterVec
	httpDuration  *prometheus.HistogramVec
	decisions     *prometheus.CounterVec
	batchRequests *prometheus.HistogramVec
	commitSeconds *prometheus.HistogramVec
	rateLimited   *prometheus.CounterVec
	answers       *prometheus.CounterVec
	challenges    *prometheus.CounterVec
	signatures    *prometheus.CounterVec
	queueStreams  prometheus.Gauge
}

// New builds the metrics and registers them, with the Go runtime and
// process collectors, on a fresh registry.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "http_requests_total",
			Help: "HTTP requests by route (mux pattern), method and status code."}, []string{"route", "method", "code"}),
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "http_request_duration_seconds",
			Help:    "HTTP request latency by route and method.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}}, []string{"route", "method"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "decisions_total",
			Help: "Decisions committed by this process's writers, by sale, decision type and reason."}, []string{"sale", "type", "reason"}),
		batchRequests: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "commit_batch_requests",
			Help:    "Requests decided per commit (group commit size).",
			Buckets: []float64{0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048}}, []string{"sale"}),
		commitSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Name: "commit_duration_seconds",
			Help:    "Time to decide and durably commit one batch.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1, 2.5, 5, 10}}, []string{"sale"}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "rate_limit_total",
			Help: "Rate-limit decisions by policy and result (allowed, rejected, shadow_rejected)."}, []string{"policy", "result"}),
		answers: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "request_answers_total",
			Help: "How token, purchase, queue (join, leave) and operator requests were answered: decided, pending (202), cheap (refused from the cached head without an append), overloaded or unavailable (503)."},
			[]string{"kind", "outcome"}),
		challenges: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "challenges_total",
			Help: "Human checks by kind (pow, captcha) and result (issued, passed, required, failed, unavailable)."}, []string{"kind", "result"}),
		signatures: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "signatures_total",
			Help: "App request signatures by result (valid, missing, invalid, stale, replayed, unavailable)."}, []string{"result"}),
		queueStreams: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "queue_streams",
			Help: "Waiting-room event streams (SSE) open on this process."}),
	}
	m.Registry.MustRegister(m.httpRequests, m.httpDuration, m.decisions, m.batchRequests, m.commitSeconds, m.rateLimited, m.answers,
		m.challenges, m.signatures, m.queueStreams,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}

// Middleware counts and times every request by its mux pattern. It must wrap
// the ServeMux itself: the mux records the matched pattern on the request.
func (m *Metrics) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		next.ServeHTTP(sw, r)
		route := r.Pattern
		if route == "" {
			route = "unmatched"
		}
		method := knownMethod(r.Method)
		m.httpRequests.WithLabelValues(route, method, strconv.Itoa(sw.code)).Inc()
		m.httpDuration.WithLabelValues(route, method).Observe(time.Since(start).Seconds())
	})
}

// knownMethod bounds the method label: made-up methods count as "other".
func knownMethod(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions:
		return m
	}
	return "other"
}

// Commit records one committed batch (the writer's OnCommit hook).
func (m *Metrics) Commit(db *events.DecisionBatch, requests int, took time.Duration) {
	if requests > 0 { // a batch of expiries only is no group commit of requests
		m.batchRequests.WithLabelValues(db.Sale).Observe(float64(requests))
	}
	m.commitSeconds.WithLabelValues(db.Sale).Observe(took.Seconds())
	for i := range db.Events {
		e := &db.Events[i]
		reason := ""
		switch d := e.Data.(type) {
		case *events.TokenDenied:
			reason = d.Reason
		case *events.PurchaseRefused:
			reason = d.Reason
		case *events.TokenIssued:
			if d.AlreadyIssued {
				reason = "already_issued"
			}
		}
		m.decisions.WithLabelValues(db.Sale, string(e.Type), reason).Inc()
	}
}

// Answer records how a request of kind (token, purchase, operator) was
// answered.
func (m *Metrics) Answer(kind, outcome string) { m.answers.WithLabelValues(kind, outcome).Inc() }

// Challenge records one human check.
func (m *Metrics) Challenge(kind, result string) { m.challenges.WithLabelValues(kind, result).Inc() }

// Signature records one app signature check.
func (m *Metrics) Signature(result string) { m.signatures.WithLabelValues(result).Inc() }

// QueueStream records a waiting-room event stream opening (+1) or closing (-1).
func (m *Metrics) QueueStream(delta int) { m.queueStreams.Add(float64(delta)) }

// Limiter registers the rate limiter's gauges: keys remembered, the live
// processes the global limits are shared by, and whether the limiter runs
// on local state alone (NATS unreachable).
func (m *Metrics) Limiter(keys func() int, processes func() int, degraded func() bool) {
	m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "rate_limit_keys",
		Help: "Client addresses and shoppers the rate limiter remembers (bounded)."}, func() float64 { return float64(keys()) }))
	m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "rate_limit_processes",
		Help: "Live flashgate processes sharing each global rate limit (each enforces limit / processes)."}, func() float64 { return float64(processes()) }))
	m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "rate_limit_degraded",
		Help: "1 while the rate limiter works on local state only (NATS unreachable: policies and the process count are the last known)."}, func() float64 {
		if degraded() {
			return 1
		}
		return 0
	}))
}

// RateLimit records one rate-limit decision.
func (m *Metrics) RateLimit(policy, result string) {
	m.rateLimited.WithLabelValues(policy, result).Inc()
}

// statusWriter remembers the status code written.
type statusWriter struct {
	http.ResponseWriter
	code        int
	wroteHeader bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wroteHeader {
		w.code, w.wroteHeader = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

// Flush passes through for streaming responses (SSE).
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// SaleFigures is what the per-sale gauges read at scrape time.
type SaleFigures struct {
	Sale                                   string
	Stock, StockLeft, Quota, QuotaLeft     int64
	Issued, Expired, Redeemed, Outstanding int64
	BatchVersion                           uint64
	// The waiting room, for a sale with one (Queue): tickets waiting and
	// admissions so far.
	Queue         bool
	QueueWaiting  int64
	QueueAdmitted int64
}

// Gauges registers collectors read at scrape time: the per-sale figures,
// the projection lag and the NATS connection state. Each function must be
// cheap or bounded in time.
func (m *Metrics) Gauges(sales func() []SaleFigures, projectionLag func() (float64, bool), natsConnected func() bool, inFlight func() int64) {
	m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "requests_in_flight",
		Help: "Requests appended and waiting here for their decision (bounded by --max-in-flight)."}, func() float64 {
		return float64(inFlight())
	}))
	m.Registry.MustRegister(&saleCollector{sales: sales})
	m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "projection_lag_messages",
		Help: "Stream messages not yet applied to the SQLite projections (-1: unknown)."}, func() float64 {
		if v, ok := projectionLag(); ok {
			return v
		}
		return -1
	}))
	m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "nats_connected",
		Help: "1 when this process is connected to NATS."}, func() float64 {
		if natsConnected() {
			return 1
		}
		return 0
	}))
}

var (
	descStockLeft   = prometheus.NewDesc(ns+"_sale_stock_left", "Units not yet sold.", []string{"sale"}, nil)
	descStock       = prometheus.NewDesc(ns+"_sale_stock", "Units for sale.", []string{"sale"}, nil)
	descQuotaLeft   = prometheus.NewDesc(ns+"_sale_quota_left", "Purchase tokens that may still be issued now.", []string{"sale"}, nil)
	descOutstanding = prometheus.NewDesc(ns+"_sale_tokens_outstanding", "Tokens issued, neither redeemed nor expired.", []string{"sale"}, nil)
	descIssued      = prometheus.NewDesc(ns+"_sale_tokens_issued", "Tokens issued (re-issues not counted).", []string{"sale"}, nil)
	descExpired     = prometheus.NewDesc(ns+"_sale_tokens_expired", "Tokens reclaimed unused.", []string{"sale"}, nil)
	descRedeemed    = prometheus.NewDesc(ns+"_sale_tokens_redeemed", "Tokens redeemed = units sold.", []string{"sale"}, nil)
	descVersion     = prometheus.NewDesc(ns+"_sale_batch_version", "Version of the sale's last committed batch.", []string{"sale"}, nil)
	descQWaiting    = prometheus.NewDesc(ns+"_queue_waiting", "Tickets waiting in the sale's waiting room.", []string{"sale"}, nil)
	descQAdmitted   = prometheus.NewDesc(ns+"_queue_admitted", "Tickets admitted from the sale's waiting room so far.", []string{"sale"}, nil)
)

type saleCollector struct{ sales func() []SaleFigures }

func (c *saleCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descStockLeft, descStock, descQuotaLeft, descOutstanding, descIssued, descExpired, descRedeemed, descVersion,
		descQWaiting, descQAdmitted} {
		ch <- d
	}
}

func (c *saleCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.sales() {
		g := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, s.Sale)
		}
		g(descStockLeft, float64(s.StockLeft))
		g(descStock, float64(s.Stock))
		g(descQuotaLeft, float64(s.QuotaLeft))
		g(descOutstanding, float64(s.Outstanding))
		g(descIssued, float64(s.Issued))
		g(descExpired, float64(s.Expired))
		g(descRedeemed, float64(s.Redeemed))
		g(descVersion, float64(s.BatchVersion))
		if s.Queue {
			g(descQWaiting, float64(s.QueueWaiting))
			g(descQAdmitted, float64(s.QueueAdmitted))
		}
	}
}

// Fulfil registers the fulfilment metrics and returns the functions that
// count: what became of each order delivery (confirmed, replayed,
// attempt_failed, failed, delayed, unauthorized) and each token request this
// process made (ok, banned, error). bannedUntil reports the provider's ban
// (zero: none); watches the order event streams open.
func (m *Metrics) Fulfil(bannedFor func() float64, watches func() int) (order func(outcome string), tokenRequest func(outcome string)) {
	orders := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "orders_total",
		Help: "Order deliveries handled by this process's fulfilment worker, by outcome."}, []string{"outcome"})
	tokens := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "provider_token_requests_total",
		Help: "Token requests this process made to the provider's token endpoint, by outcome."}, []string{"outcome"})
	m.Registry.MustRegister(orders, tokens,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "provider_banned_seconds",
			Help: "Seconds left of the provider's ban (0: not banned): orders wait meanwhile."}, bannedFor),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "order_streams",
			Help: "Order event streams (SSE) open."}, func() float64 { return float64(watches()) }))
	return func(o string) { orders.WithLabelValues(o).Inc() }, func(o string) { tokens.WithLabelValues(o).Inc() }
}
