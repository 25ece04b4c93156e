package parent

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/net/netutil"
)

// Collectors returns Prometheus metrics for the ingress's counters
// (Stats and LimitStats), read when scraped; labels names this ingress
// (for example {"enclave": "signer"}), or is nil. Register them on a
// registry and serve it with ServeMetrics.
func (in *Ingress) Collectors(labels prometheus.Labels) []prometheus.Collector {
	counter := func(name, help string, f func() int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: labels}, func() float64 { return float64(f()) })
	}
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "enclavekit_ingress_open_connections", Help: "Connections being forwarded now.", ConstLabels: labels},
			func() float64 { return float64(in.Stats().Open) }),
		counter("enclavekit_ingress_connections_total", "Connections accepted and forwarded.", func() int64 { return in.Stats().Total }),
		counter("enclavekit_ingress_rejected_total", "Connections closed at once at the connection cap with nothing to evict.", func() int64 { return in.Stats().Rejected }),
		counter("enclavekit_ingress_dial_failures_total", "Connections closed because the enclave could not be reached.", func() int64 { return in.Stats().Failed }),
		counter("enclavekit_ingress_evicted_total", "Connections closed to make room at the connection or per-source cap.", func() int64 { return in.LimitStats().Evicted }),
		counter("enclavekit_ingress_slow_total", "Connections closed for sending slower than the minimum rate.", func() int64 { return in.LimitStats().Slow }),
		counter("enclavekit_ingress_source_refused_total", "Newcomers refused: their source was at its cap with nothing to displace.", func() int64 { return in.LimitStats().SourceRefused }),
	}
}

// Collectors returns Prometheus metrics for the log sink's counters
// (Stats), read when scraped; labels names this sink, or is nil.
func (s *LogSink) Collectors(labels prometheus.Labels) []prometheus.Collector {
	counter := func(name, help string, f func(LogSinkStats) int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: labels}, func() float64 { return float64(f(s.Stats())) })
	}
	return []prometheus.Collector{
		counter("enclavekit_logsink_records_total", "Log records received and printed.", func(st LogSinkStats) int64 { return st.Records }),
		counter("enclavekit_logsink_bad_frames_total", "Frames dropped because they did not decode.", func(st LogSinkStats) int64 { return st.Bad }),
		counter("enclavekit_logsink_connections_total", "Streams accepted.", func(st LogSinkStats) int64 { return st.Conns }),
		counter("enclavekit_logsink_evicted_total", "Streams closed to make room at the cap.", func(st LogSinkStats) int64 { return st.Evicted }),
		counter("enclavekit_logsink_refused_total", "Streams refused: not from an allowed enclave CID.", func(st LogSinkStats) int64 { return st.Refused }),
	}
}

// MaxMetricsConns bounds the connections ServeMetrics serves at once.
const MaxMetricsConns = 32

// ServeMetrics serves reg's metrics at /metrics on ln until ctx ends,
// with read, write and idle timeouts and at most MaxMetricsConns
// connections, so a slow or hostile scraper cannot pile up connections.
func ServeMetrics(ctx context.Context, ln net.Listener, reg *prometheus.Registry) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
	}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if err := srv.Serve(netutil.LimitListener(ln, MaxMetricsConns)); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
