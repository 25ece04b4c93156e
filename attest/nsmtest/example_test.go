package nsmtest_test

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"time"

	"github.com/enclavekit/enclavekit/attest"
	"github.com/enclavekit/enclavekit/attest/nsmtest"
	"github.com/hf/nsm"
	"github.com/hf/nsm/request"
)

// The emulator plugs into hf/nsm directly: the real session code encodes
// the request and decodes the response.
func ExampleNew() {
	emu, err := nsmtest.New(nsmtest.Options{ModuleID: "i-0123456789abcdef0-enc0123456789abcdef"})
	if err != nil {
		log.Fatal(err)
	}
	sess, err := nsm.OpenSession(emu.Options())
	if err != nil {
		log.Fatal(err)
	}
	defer sess.Close()
	res, err := sess.Send(&request.DescribeNSM{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(res.DescribeNSM.ModuleID, res.DescribeNSM.MaxPCRs, res.DescribeNSM.Digest)
	// Output: i-0123456789abcdef0-enc0123456789abcdef 32 SHA384
}

// Load PCR0..2 from a build's measurements, then attest and verify against
// the emulator's root.
func ExampleEmulator_SetPCRs() {
	emu, err := nsmtest.New(nsmtest.Options{})
	if err != nil {
		log.Fatal(err)
	}
	measured := map[int][]byte{0: make([]byte, 48), 1: make([]byte, 48), 2: make([]byte, 48)}
	measured[0][0], measured[1][0], measured[2][0] = 0xa0, 0xa1, 0xa2
	if err := emu.SetPCRs(measured); err != nil {
		log.Fatal(err)
	}
	n, err := attest.OpenNSM(emu.Options())
	if err != nil {
		log.Fatal(err)
	}
	defer n.Close()
	doc, err := n.Attest(context.Background(), attest.Request{})
	if err != nil {
		log.Fatal(err)
	}
	d, err := attest.Verify(doc, attest.VerifyOptions{Roots: emu.Roots(), PCRs: measured})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("PCR0 %x PCR2 %x\n", d.PCRs[0][0], d.PCRs[2][0])
	// Output: PCR0 a0 PCR2 a2
}

// Emulate a debug-mode enclave whose NSM clock runs 10 s ahead of the
// system's, to test an enclave's startup checks.
func ExampleEmulator_SetDebug() {
	emu, err := nsmtest.New(nsmtest.Options{PCRs: nsmtest.DevPCRs()})
	if err != nil {
		log.Fatal(err)
	}
	emu.SetDebug(true)
	emu.SetClockOffset(10 * time.Second)
	n, err := attest.OpenNSM(emu.Options())
	if err != nil {
		log.Fatal(err)
	}
	defer n.Close()
	before := time.Now()
	doc, err := n.Attest(context.Background(), attest.Request{})
	if err != nil {
		log.Fatal(err)
	}
	d, err := attest.ParseUnverified(doc)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("PCR0 all zeros: %v\n", bytes.Equal(d.PCRs[0], make([]byte, nsmtest.PCRSize)))
	fmt.Println("NSM ahead by:", d.Timestamp.Sub(before).Round(time.Second))
	// Output:
	// PCR0 all zeros: true
	// NSM ahead by: 10s
}
