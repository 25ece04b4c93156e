package parent_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing/fstest"
	"time"

	"github.com/enclavekit/enclavekit/attest"
	"github.com/enclavekit/enclavekit/attest/nsmtest"
	"github.com/enclavekit/enclavekit/enclave"
	"github.com/enclavekit/enclavekit/parent"
	"github.com/enclavekit/enclavekit/protocol"
	"github.com/enclavekit/enclavekit/transport"
)

// startExampleEnclave stands in for the enclave: an enclave.Server on
// loopback TCP with an "add" method. It returns its address and a stop
// function.
func startExampleEnclave() (string, func()) { return startExampleEnclaveWith(nil) }

func startExampleEnclaveWith(attester attest.Attester) (string, func()) {
	srv, err := enclave.New(enclave.Config{
		Addr:     "tcp://127.0.0.1:0",
		Dev:      true,
		SysFS:    fstest.MapFS{},
		Logger:   slog.New(slog.DiscardHandler),
		Attester: attester,
	})
	if err != nil {
		panic(err)
	}
	type addReq struct {
		A int `cbor:"1,keyasint"`
		B int `cbor:"2,keyasint"`
	}
	srv.Handle("calc.add", func(_ context.Context, body []byte) ([]byte, error) {
		var req addReq
		if err := protocol.Unmarshal(body, &req); err != nil {
			return nil, fmt.Errorf("%w: %w", protocol.ErrBadRequest, err)
		}
		return protocol.Marshal(req.A + req.B)
	})
	ctx, cancel := context.WithCancel(context.Background())
	if err := srv.Listen(ctx); err != nil {
		panic(err)
	}
	done := make(chan struct{})
	go func() { srv.Serve(ctx); close(done) }()
	return transport.AddrOf(srv.Addr()), func() { cancel(); <-done }
}

// Dial an enclave server and call a method with CBOR-encoded values. On a
// parent instance the address is vsock://CID:5000.
func ExampleDial() {
	addr, stop := startExampleEnclave()
	defer stop()

	ctx := context.Background()
	client, err := parent.Dial(ctx, addr, parent.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer client.Close()

	var sum int
	err = client.Call(ctx, "calc.add", map[int]int{1: 2, 2: 40}, &sum)
	fmt.Println(sum, err)
	// Output: 42 <nil>
}

// Remote error codes come back as errors that match the protocol sentinels.
func ExampleClient_Call() {
	addr, stop := startExampleEnclave()
	defer stop()

	ctx := context.Background()
	client, err := parent.Dial(ctx, addr, parent.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer client.Close()

	var health protocol.HealthResponse
	if err := client.Call(ctx, protocol.MethodHealth, nil, &health); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("dev:", health.Dev)

	err = client.Call(ctx, "calc.mul", nil, nil)
	fmt.Println(errors.Is(err, protocol.ErrUnknownMethod), err)
	// Output:
	// dev: true
	// true remote error 2 (unknown method)
}

// Clean text from the enclave (here, a remote error message) before it
// reaches a log or a terminal: no forged lines, no escape sequences.
func ExampleSanitize() {
	fmt.Println(parent.Sanitize("line\nforged\x1b[0m", 64))
	// Output: lineforged[0m
}

// Attest the enclave before trusting it: a fresh nonce, the expected PCRs,
// and a maximum age. Here the NSM emulator stands in for the enclave's NSM,
// so its root replaces the pinned AWS root.
func ExampleClient_Attest() {
	pcr0 := bytes.Repeat([]byte{0x5a}, 48) // from "enclavekit eif describe"
	emu, err := nsmtest.New(nsmtest.Options{PCRs: map[int][]byte{0: pcr0}})
	if err != nil {
		fmt.Println(err)
		return
	}
	nsm, err := attest.OpenNSM(emu.Options())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer nsm.Close()
	addr, stop := startExampleEnclaveWith(nsm)
	defer stop()

	ctx := context.Background()
	client, err := parent.Dial(ctx, addr, parent.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer client.Close()

	doc, err := client.Attest(ctx, parent.AttestOptions{
		Roots:  emu.Roots(), // nil in production: the AWS Nitro root
		PCRs:   map[int][]byte{0: pcr0},
		MaxAge: time.Minute,
	})
	if err != nil {
		fmt.Println("refused:", err)
		return
	}
	fmt.Println("verified; nonce bytes:", len(doc.Nonce))

	_, err = client.Attest(ctx, parent.AttestOptions{Roots: emu.Roots(), PCRs: map[int][]byte{0: make([]byte, 48)}})
	fmt.Println(errors.Is(err, parent.ErrAttestation), errors.Is(err, attest.ErrPCRMismatch))
	// Output:
	// verified; nonce bytes: 32
	// true true
}
