package enclave_test

import (
	"context"
	"crypto/sha512"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/enclavekit/enclavekit/attest"
	"github.com/enclavekit/enclavekit/attest/nsmtest"
	"github.com/enclavekit/enclavekit/enclave"
)

// A plain net/http server in the enclave serves HTTPS behind the attested
// listener, and a client outside verifies, from the handshake and a
// session-bound (Fresh) document, that it talks to that enclave. In an
// enclave the attester is attest.OpenDefaultNSM() and the inner listener
// transport.Listen(ctx, "vsock://any:8443"); clients verify to the AWS root
// (leave TLSOptions.Roots nil) and the PCRs of the EIF.
func ExampleNewAttestedListener() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// Inside the enclave. (Here: the NSM emulator, with PCR0-2 as an
	// EIF build would report them.)
	pcrs := map[int][]byte{}
	for i := range 3 {
		h := sha512.Sum384(fmt.Appendf(nil, "example PCR%d", i))
		pcrs[i] = h[:]
	}
	emu, _ := nsmtest.New(nsmtest.Options{PCRs: pcrs})
	nsm, _ := attest.OpenNSM(emu.Options())
	defer nsm.Close()
	inner, _ := net.Listen("tcp", "127.0.0.1:0")
	ln, err := enclave.NewAttestedListener(ctx, inner, nsm, enclave.AttestedTLSConfig{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		fmt.Println(err)
		return
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintln(w, "hello from inside the enclave")
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go srv.Serve(ln)
	defer srv.Close()

	// Outside: an HTTP client whose connections are attested TLS.
	dialer := &attest.TLSDialer{Options: attest.TLSOptions{
		Roots: emu.Roots(), // nil in production: the pinned AWS root
		PCRs:  pcrs,
		Fresh: true,
	}}
	client := &http.Client{Transport: &http.Transport{DialTLSContext: dialer.DialContext}}
	resp, err := client.Get("https://" + inner.Addr().String() + "/")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Print(resp.Status, ": ", string(body))
	// Output: 200 OK: hello from inside the enclave
}
