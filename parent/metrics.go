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
