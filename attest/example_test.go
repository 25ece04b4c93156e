package attest_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/enclavekit/enclavekit/attest"
	"github.com/enclavekit/enclavekit/attest/nsmtest"
)

// Verify an archived document from the corpus against the pinned AWS Nitro
// root. MaxAge is left at zero: the document is years old, so only the
// chain at its own timestamp and the signature are checked.
func ExampleVerify() {
	doc, err := os.ReadFile("testdata/valid/hf_nitrite_test_hex_attestation_doc.cbor")
	if err != nil {
		log.Fatal(err)
	}
	d, err := attest.Verify(doc, attest.VerifyOptions{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(d.ModuleID)
	fmt.Println(d.Timestamp.Format(time.RFC3339Nano))
	fmt.Printf("PCR4 %x…\n", d.PCRs[4][:8])
	// Output:
	// i-0809849710bf1b61b-enc017cc45400406a27
	// 2021-10-28T17:02:02.077Z
	// PCR4 d8a8e8eee96d81b7…
}

// A live handshake: the verifier sends a nonce, the enclave asks its NSM
// (here the emulator) for a document binding it, and the verifier checks the
// chain, the signature, the freshness, the nonce and the PCRs.
func ExampleOpenNSM() {
	emu, err := nsmtest.New(nsmtest.Options{})
	if err != nil {
		log.Fatal(err)
	}
	pcr0 := make([]byte, 48)
	pcr0[0] = 0x42
	if err := emu.SetPCR(0, pcr0); err != nil { // as if measured from an EIF
		log.Fatal(err)
	}

	nsm, err := attest.OpenNSM(emu.Options()) // attest.OpenDefaultNSM() in an enclave
	if err != nil {
		log.Fatal(err)
	}
	defer nsm.Close()

	nonce := []byte("fresh verifier nonce")
	doc, err := nsm.Attest(context.Background(), attest.Request{Nonce: nonce, UserData: []byte("hello")})
	if err != nil {
		log.Fatal(err)
	}

	d, err := attest.Verify(doc, attest.VerifyOptions{
		Roots:  emu.Roots(), // nil in production: the AWS Nitro root
		MaxAge: 5 * time.Minute,
		Nonce:  nonce,
		PCRs:   map[int][]byte{0: pcr0},
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s %d PCRs\n", d.UserData, len(d.PCRs))
	// Output: hello 16 PCRs
}
