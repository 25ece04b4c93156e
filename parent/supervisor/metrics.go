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
