package knitd

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are knitd's Prometheus series, on a registry of their own.
type metrics struct {
	reg      *prometheus.Registry
	latency  *prometheus.HistogramVec
	errors   *prometheus.CounterVec
	inFlight *prometheus.GaugeVec
	status   *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "knit_cni_request_duration_seconds",
			Help:    "Latency of CNI requests served by knitd, by command and outcome.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"command", "result"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "knit_cni_request_errors_total",
			Help: "CNI requests that failed, by command and CNI error code.",
		}, []string{"command", "code"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "knit_cni_requests_in_flight",
			Help: "CNI requests being served, by command.",
		}, []string{"command"}),
		status: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "knit_network_status_writes_total",
			Help: "network-status annotation writes, by result (ok, retry, failed, gone).",
		}, []string{"result"}),
	}
	m.reg.MustRegister(m.latency, m.errors, m.inFlight, m.status,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// observe records one request; call the returned func when it is done,
// with the CNI error code (0 on success).
func (m *metrics) observe(cmd string) func(code uint) {
	start := time.Now()
	g := m.inFlight.WithLabelValues(cmd)
	g.Inc()
	return func(code uint) {
		g.Dec()
		result := "ok"
		if code != 0 {
			result = "error"
			m.errors.WithLabelValues(cmd, strconv.FormatUint(uint64(code), 10)).Inc()
		}
		m.latency.WithLabelValues(cmd, result).Observe(time.Since(start).Seconds())
	}
}
