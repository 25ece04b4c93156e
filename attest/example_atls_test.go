package attest_test

import (
	"context"
	"crypto/sha512"
	"fmt"
	"log/slog"
	"net"
	"strings"

	"github.com/enclavekit/enclavekit/attest"
	"github.com/enclavekit/enclavekit/attest/nsmtest"
	"github.com/enclavekit/enclavekit/enclave"
)

// Verify an attested TLS endpoint and ask for a document bound to the
// session. Outside development, leave Roots nil (the pinned AWS root) and
// take the PCRs from the EIF build.
func ExampleClientHandshake() {
	ctx := context.Background()
	// A development enclave on loopback (enclaved --tls-listen does this).
	pcr0 := sha512.Sum384([]byte("example image"))
	emu, _ := nsmtest.New(nsmtest.Options{PCRs: map[int][]byte{0: pcr0[:]}})
	nsm, _ := attest.OpenNSM(emu.Options())
	defer nsm.Close()
	inner, _ := net.Listen("tcp", "127.0.0.1:0")
	ln, _ := enclave.NewAttestedListener(ctx, inner, nsm, enclave.AttestedTLSConfig{Logger: slog.New(slog.DiscardHandler)})
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err == nil {
			defer c.Close()
			c.Read(make([]byte, 1)) // serves the Fresh request
		}
	}()

	raw, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		fmt.Println(err)
		return
	}
	c, err := attest.ClientHandshake(ctx, raw, attest.TLSOptions{
		Roots: emu.Roots(),
		PCRs:  map[int][]byte{0: pcr0[:]},
		Fresh: true,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	fmt.Println(strings.Join(c.Result().Checks, " "))
	// Output: tls1.3 extension document root max-age pcrs debug-mode public-key fresh-nonce
}
