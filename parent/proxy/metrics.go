package proxy

import (
	"log"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Limits of the /metrics HTTP server (Config.Metrics). A scrape is one
// small request, so these are tight: a peer that connects and sends
// nothing, or reads the answer slowly, loses its connection within
// seconds, and no more than MetricsMaxConns connections are open at once
// (a connection over the cap is closed as soon as it is accepted).
const (
	MetricsReadHeaderTimeout = 5 * time.Second
	MetricsReadTimeout       = 10 * time.Second
	MetricsWriteTimeout      = 30 * time.Second
	MetricsIdleTimeout       = 60 * time.Second
	MetricsMaxConns          = 32
)

// newMetricsServer returns the /metrics server with every timeout set.
func newMetricsServer(h http.Handler, errLog *log.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: MetricsReadHeaderTimeout,
		ReadTimeout:       MetricsReadTimeout,
		WriteTimeout:      MetricsWriteTimeout,
		IdleTimeout:       MetricsIdleTimeout,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          errLog,
	}
}

// capListener closes accepted connections beyond max open ones at once,
// so Accept never blocks on the cap and the server keeps serving the
// connections it has.
type capListener struct {
	net.Listener
	mu   sync.Mutex
	open int
	max  int
}

func newCapListener(ln net.Listener, max int) *capListener {
	return &capListener{Listener: ln, max: max}
}

// Accept returns the next connection under the cap.
func (l *capListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		l.mu.Lock()
		ok := l.open < l.max
		if ok {
			l.open++
		}
		l.mu.Unlock()
		if !ok {
			c.Close()
			continue
		}
		return &capConn{Conn: c, l: l}, nil
	}
}

// capConn gives its slot back on its first Close.
type capConn struct {
	net.Conn
	l    *capListener
	once sync.Once
}

// Close gives the slot back before it closes the connection, so that a
// client that saw its connection end can connect again at once (the other
// order let a scraper reconnecting right after a timeout be refused).
func (c *capConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		c.l.open--
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}

// Metric names (all with the enclavekit_proxy_ prefix):
//
//	connections_open{route}              gauge
//	connections_total{route}             counter, accepted and under the cap
//	connections_refused_total{route,reason} counter, reason one of the Reason* constants
//	bytes_total{route,direction}         counter, direction "upstream" (enclave→destination) or "downstream"
//	dial_duration_seconds{route}         histogram of resolution+connect time, successful dials
//	errors_total{route,kind}             counter, kind "accept", "dial", "relay", "idle_timeout", "panic"
type metrics struct {
	open    *prometheus.GaugeVec
	total   *prometheus.CounterVec
	refused *prometheus.CounterVec
	bytes   *prometheus.CounterVec
	dial    *prometheus.HistogramVec
	errors  *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns, sub = "enclavekit", "proxy"
	m := &metrics{
		open: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub,
			Name: "connections_open", Help: "Connections currently open, by route."}, []string{"route"}),
		total: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "connections_total", Help: "Connections accepted under the cap, by route."}, []string{"route"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "connections_refused_total", Help: "Connections refused, by route and reason."}, []string{"route", "reason"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "bytes_total", Help: "Bytes forwarded, by route and direction (upstream: to the destination)."}, []string{"route", "direction"}),
		dial: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub,
			Name: "dial_duration_seconds", Help: "Time to resolve and connect to a destination, by route.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}, []string{"route"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub,
			Name: "errors_total", Help: "Errors, by route and kind (accept, dial, relay, idle_timeout, panic)."}, []string{"route", "kind"}),
	}
	for _, c := range []prometheus.Collector{m.open, m.total, m.refused, m.bytes, m.dial, m.errors} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// routeMetrics holds one route's curried metrics, so the hot path does no
// label lookups.
type routeMetrics struct {
	open       prometheus.Gauge
	total      prometheus.Counter
	upstream   prometheus.Counter
	downstream prometheus.Counter
	dial       prometheus.Observer
}

func (m *metrics) forRoute(name string) routeMetrics {
	return routeMetrics{
		open:       m.open.WithLabelValues(name),
		total:      m.total.WithLabelValues(name),
		upstream:   m.bytes.WithLabelValues(name, "upstream"),
		downstream: m.bytes.WithLabelValues(name, "downstream"),
		dial:       m.dial.WithLabelValues(name),
	}
}
