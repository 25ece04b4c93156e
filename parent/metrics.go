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
