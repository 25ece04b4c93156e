package ingress

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/enclavekit/enclavekit/internal/testutil"
)

// TestMetrics: the ingress's counters are exported with the labels given.
// (parent's TestServeMetrics serves a registry over HTTP.)
func TestMetrics(t *testing.T) {
	backend, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	testutil.Serve(t, backend, testutil.Echo)
	in, addr := startIngress(t, Config{Target: "tcp://" + backend.Addr().String()})
	c := testutil.DialTCP(t, addr)
	c.Write([]byte("x"))
	io.ReadFull(c, make([]byte, 1))
	c.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(in.Collectors(prometheus.Labels{"enclave": "signer"})...)
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{
		`enclavekit_ingress_connections_total{enclave="signer"} 1`,
		`enclavekit_ingress_evicted_total{enclave="signer"} 0`,
		`enclavekit_ingress_source_refused_total{enclave="signer"} 0`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, body)
		}
	}
}
