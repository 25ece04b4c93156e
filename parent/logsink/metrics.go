package logsink

import "github.com/prometheus/client_golang/prometheus"

// Collectors returns Prometheus metrics for the log sink's counters
// (Stats), read when scraped; labels names this sink (for example
// {"enclave": "signer"}), or is nil. Register them on a registry and
// serve it, for example with parent.ServeMetrics.
func (s *Sink) Collectors(labels prometheus.Labels) []prometheus.Collector {
	counter := func(name, help string, f func(Stats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: labels}, func() float64 { return float64(f(s.Stats())) })
	}
	return []prometheus.Collector{
		counter("enclavekit_logsink_records_total", "Log records received and printed.", func(st Stats) uint64 { return st.Records }),
		counter("enclavekit_logsink_bad_frames_total", "Frames dropped because they did not decode.", func(st Stats) uint64 { return st.BadFrames }),
		counter("enclavekit_logsink_connections_total", "Streams accepted.", func(st Stats) uint64 { return st.TotalConns }),
		counter("enclavekit_logsink_evicted_total", "Streams closed to make room at the cap.", func(st Stats) uint64 { return st.EvictedConns }),
		counter("enclavekit_logsink_refused_total", "Streams refused: not from an allowed enclave CID.", func(st Stats) uint64 { return st.RefusedConns }),
	}
}
