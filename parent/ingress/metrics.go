package ingress

import "github.com/prometheus/client_golang/prometheus"

// Collectors returns Prometheus metrics for the ingress's counters
// (Stats and LimitStats), read when scraped; labels names this ingress
// (for example {"enclave": "signer"}), or is nil. Register them on a
// registry and serve it, for example with parent.ServeMetrics.
func (in *Server) Collectors(labels prometheus.Labels) []prometheus.Collector {
	counter := func(name, help string, f func() uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: labels}, func() float64 { return float64(f()) })
	}
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "enclavekit_ingress_open_connections", Help: "Connections being forwarded now.", ConstLabels: labels},
			func() float64 { return float64(in.Stats().OpenConns) }),
		counter("enclavekit_ingress_connections_total", "Connections accepted and forwarded.", func() uint64 { return in.Stats().TotalConns }),
		counter("enclavekit_ingress_rejected_total", "Connections closed at once at the connection cap with nothing to evict.", func() uint64 { return in.Stats().RejectedConns }),
		counter("enclavekit_ingress_dial_failures_total", "Connections closed because the enclave could not be reached.", func() uint64 { return in.Stats().FailedConns }),
		counter("enclavekit_ingress_evicted_total", "Connections closed to make room at the connection or per-source cap.", func() uint64 { return in.LimitStats().EvictedConns }),
		counter("enclavekit_ingress_slow_total", "Connections closed for sending slower than the minimum rate.", func() uint64 { return in.LimitStats().SlowConns }),
		counter("enclavekit_ingress_source_refused_total", "Newcomers refused: their source was at its cap with nothing to displace.", func() uint64 { return in.LimitStats().SourceRejectedConns }),
	}
}
