package supervisor

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	ready         prometheus.Gauge
	up            *prometheus.GaugeVec
	runs          *prometheus.CounterVec
	restarts      *prometheus.CounterVec
	probeFailures *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		ready: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "enclavekit_supervisor_ready",
			Help: "1 when every enclave answers its health probes and the supervisor is not stopping.",
		}),
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "enclavekit_supervisor_enclave_up",
			Help: "1 while the enclave answers its health probes.",
		}, []string{"enclave"}),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "enclavekit_supervisor_enclave_runs_total",
			Help: "Enclave starts attempted (nitro-cli run-enclave).",
		}, []string{"enclave"}),
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "enclavekit_supervisor_enclave_restarts_total",
			Help: "Enclave restarts, by why the previous run ended.",
		}, []string{"enclave", "reason"}),
		probeFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "enclavekit_supervisor_probe_failures_total",
			Help: "Failed enclavekit.health probes.",
		}, []string{"enclave"}),
	}
	for _, c := range []prometheus.Collector{m.ready, m.up, m.runs, m.restarts, m.probeFailures} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// The enclave server's own counters, from each enclave's last answered
// health probe: the parent scrapes them over the protocol (enclavekit.health)
// and re-exports them here, since an enclave has no metrics endpoint.
var (
	descEnclaveOpen     = prometheus.NewDesc("enclavekit_enclave_open_connections", "Open connections at the enclave server (last health probe).", []string{"enclave"}, nil)
	descEnclaveConns    = prometheus.NewDesc("enclavekit_enclave_connections_total", "Connections the enclave server accepted since it started.", []string{"enclave"}, nil)
	descEnclaveRejected = prometheus.NewDesc("enclavekit_enclave_rejected_connections_total", "Connections the enclave server closed at once at its cap.", []string{"enclave"}, nil)
	descEnclaveUptime   = prometheus.NewDesc("enclavekit_enclave_uptime_seconds", "Time since the enclave server started.", []string{"enclave"}, nil)
	descEnclaveDev      = prometheus.NewDesc("enclavekit_enclave_dev", "1 when the enclave runs with its startup checks overridden (--dev).", []string{"enclave"}, nil)
	descEnclaveSkew     = prometheus.NewDesc("enclavekit_enclave_clock_skew_seconds", "The enclave's system clock minus the NSM's time at its last reading.", []string{"enclave"}, nil)
	descEnclaveExceeded = prometheus.NewDesc("enclavekit_enclave_clock_exceeded_total", "Clock readings past the enclave's skew bound.", []string{"enclave"}, nil)
)

// enclaveCollector reports every enclave's last health answer.
type enclaveCollector struct{ s *Supervisor }

func (enclaveCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descEnclaveOpen, descEnclaveConns, descEnclaveRejected, descEnclaveUptime, descEnclaveDev, descEnclaveSkew, descEnclaveExceeded} {
		ch <- d
	}
}

func (c enclaveCollector) Collect(ch chan<- prometheus.Metric) {
	for _, u := range c.s.units {
		u.mu.Lock()
		h := u.health
		u.mu.Unlock()
		if h == nil {
			continue
		}
		name := u.e.Name
		dev := 0.0
		if h.Dev {
			dev = 1
		}
		ch <- prometheus.MustNewConstMetric(descEnclaveOpen, prometheus.GaugeValue, float64(h.OpenConns), name)
		ch <- prometheus.MustNewConstMetric(descEnclaveConns, prometheus.CounterValue, float64(h.TotalConns), name)
		ch <- prometheus.MustNewConstMetric(descEnclaveRejected, prometheus.CounterValue, float64(h.RejectedConns), name)
		ch <- prometheus.MustNewConstMetric(descEnclaveUptime, prometheus.GaugeValue, float64(h.UptimeMillis)/1000, name)
		ch <- prometheus.MustNewConstMetric(descEnclaveDev, prometheus.GaugeValue, dev, name)
		if clk := h.Clock; clk != nil {
			ch <- prometheus.MustNewConstMetric(descEnclaveSkew, prometheus.GaugeValue, float64(clk.SkewNanos)/1e9, name)
			ch <- prometheus.MustNewConstMetric(descEnclaveExceeded, prometheus.CounterValue, float64(clk.Exceeded), name)
		}
	}
}
