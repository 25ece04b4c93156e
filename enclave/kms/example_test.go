package kms_test

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"log/slog"

	"github.com/enclavekit/enclavekit/attest"
	"github.com/enclavekit/enclavekit/attest/nsmtest"
	"github.com/enclavekit/enclavekit/enclave/kms"
	"github.com/enclavekit/enclavekit/enclave/kms/kmstest"
)

// Seal state in one enclave run and open it in the next, against the KMS
// and NSM emulators. In an enclave, ProxyAddr is left at vsock://3:8000
// (the parent's route to kms.REGION.amazonaws.com:443), RootCAs nil (the
// bundled roots), the Attester the NSM, and the credentials come from the
// parent's push into a CredentialStore.
func Example() {
	pcr0 := bytes.Repeat([]byte{0x42}, 48) // the measurement of the image
	emu, err := nsmtest.New(nsmtest.Options{PCRs: map[int][]byte{0: pcr0}})
	if err != nil {
		log.Fatal(err)
	}
	nsm, err := attest.OpenNSM(emu.Options())
	if err != nil {
		log.Fatal(err)
	}
	defer nsm.Close()
	server, err := kmstest.New(kmstest.Options{AttestationRoots: emu.Roots()})
	if err != nil {
		log.Fatal(err)
	}
	defer server.Close()
	keyARN, err := server.CreateKey(kmstest.KeyOptions{Policy: kmstest.PolicyRequiringPCRs(map[int][]byte{0: pcr0})})
	if err != nil {
		log.Fatal(err)
	}

	store := kms.NewCredentialStore(kms.CredentialStoreOptions{Logger: slog.New(slog.DiscardHandler)})
	creds, _ := server.Credentials().Retrieve(context.Background())
	if err := store.Set(creds); err != nil { // the parent's push, in an enclave
		log.Fatal(err)
	}
	client, err := kms.New(kms.Config{
		Keys:        []string{keyARN}, // pinned in the image
		ProxyAddr:   "tcp://" + server.Addr(),
		RootCAs:     server.CertPool(),
		Credentials: store,
		Attester:    nsm,
		Logger:      slog.New(slog.DiscardHandler),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	ctx := context.Background()
	sealed, err := client.Seal(ctx, keyARN, "ledger", []byte("signing key and counters"))
	if err != nil {
		log.Fatal(err)
	}
	// ... the parent stores sealed; the enclave restarts and gets it back.
	state, err := client.Open(ctx, "ledger", sealed)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(state, string(state.Bytes()))
	// Output: [REDACTED] signing key and counters
}
