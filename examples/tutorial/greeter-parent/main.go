// Command greeter-parent calls greeter-enclave from the parent instance.
package main

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/enclavekit/enclavekit/attest"
	"github.com/enclavekit/enclavekit/parent"
	"github.com/enclavekit/enclavekit/protocol"
)

// The same definitions as in the enclave.
type GreetRequest struct {
	Name string `cbor:"1,keyasint"`
}

type GreetResponse struct {
	Greeting string `cbor:"1,keyasint"`
}

func main() {
	addr := flag.String("addr", "vsock://16:5000", "enclave server address")
	rootFile := flag.String("root", "", "development only: PEM root to trust instead of the AWS Nitro root")
	pcr0 := flag.String("pcr0", "", "expected PCR0 (hex), from enclavekit eif pcrs")
	flag.Parse()

	ctx := context.Background()
	client, err := parent.Dial(ctx, *addr, parent.Options{})
	if err != nil {
		log.Fatal(err) // nothing listens at addr, or the address is malformed
	}
	defer client.Close()

	// 1. Attest before sending anything that matters.
	opts := parent.AttestOptions{MaxAge: time.Minute}
	if *rootFile != "" {
		pem, err := os.ReadFile(*rootFile)
		if err != nil {
			log.Fatal(err)
		}
		opts.Roots = x509.NewCertPool()
		opts.Roots.AppendCertsFromPEM(pem)
	}
	if *pcr0 != "" {
		v, err := hex.DecodeString(*pcr0)
		if err != nil {
			log.Fatal(err)
		}
		opts.PCRs = map[int][]byte{0: v}
	} else {
		opts.AnyImage = *rootFile != "" // development only
	}
	doc, err := client.Attest(ctx, opts)
	switch {
	case errors.Is(err, attest.ErrPCRMismatch):
		log.Fatal("the enclave runs a different image: ", err)
	case errors.Is(err, parent.ErrAttestation):
		log.Fatal("attestation rejected: ", err)
	case err != nil:
		log.Fatal(err)
	}
	fmt.Printf("attested: module %s, PCR0 %x\n", doc.ModuleID, doc.PCRs[0])

	// 2. Call the method with typed bodies.
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var resp GreetResponse
	err = client.Call(cctx, "greet", GreetRequest{Name: "parent"}, &resp)
	fmt.Println(resp.Greeting, err)

	// 3. Errors from the enclave match the protocol sentinels.
	err = client.Call(cctx, "greet", GreetRequest{}, &resp)
	fmt.Println(errors.Is(err, protocol.ErrBadRequest), err)
	err = client.Call(cctx, "no.such.method", nil, nil)
	fmt.Println(errors.Is(err, protocol.ErrUnknownMethod), err)
	var re *protocol.RemoteError
	if errors.As(err, &re) {
		fmt.Println("code", int(re.Code))
	}
}
