package parent

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/enclavekit/enclavekit/internal/testutil"
)

// TestIngressAndSinkMetrics: the ingress's and the sink's counters are
// served at /metrics, with the labels given.
func TestIngressAndSinkMetrics(t *testing.T) {
	backend, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	testutil.Serve(t, backend, testutil.Echo)
	in, addr := startIngress(t, IngressConfig{Target: "tcp://" + backend.Addr().String()})
	c := dialTCP(t, addr)
	c.Write([]byte("x"))
	io.ReadFull(c, make([]byte, 1))
	c.Close()
	sink, err := NewLogSink(LogSinkConfig{Handler: slog.DiscardHandler})
	if err != nil {
		t.Fatal(err)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(in.Collectors(prometheus.Labels{"enclave": "signer"})...)
	reg.MustRegister(sink.Collectors(nil)...)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeMetrics(ctx, ln, reg) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeMetrics: %v", err)
		}
	}()
	resp, err := http.Get("http://" + ln.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`enclavekit_ingress_connections_total{enclave="signer"} 1`,
		`enclavekit_ingress_evicted_total{enclave="signer"} 0`,
		`enclavekit_ingress_source_refused_total{enclave="signer"} 0`,
		`enclavekit_logsink_records_total 0`,
		`enclavekit_logsink_refused_total 0`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q:\n%s", want, body)
		}
	}
}
