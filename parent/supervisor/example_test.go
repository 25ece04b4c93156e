package supervisor_test

import (
	"fmt"

	"github.com/enclavekit/enclavekit/parent/supervisor"
)

// Parse a run.yaml with two enclaves in slot 1 (the second supervisor on
// the instance) and print where each enclave goes.
func ExampleParseConfig() {
	cfg, err := supervisor.ParseConfig("run.yaml", []byte(`
slot: 1
enclaves:
  - name: signer
    eif: /opt/enclaves/signer.eif
    cpus: 2
    memory_mib: 2048
    ingress:
      - listen: tcp://0.0.0.0:443
        port: 443
  - name: scorer
    eif: /opt/enclaves/scorer.eif
    memory_mib: 1024
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, a := range cfg.Assignments() {
		fmt.Println(a.Name, a.CID, a.Address, a.LogSink)
	}

	_, err = supervisor.ParseConfig("run.yaml", []byte("enclaves:\n  - {name: a, eif: /a.eif, memory_mib: 256, cpus: many}\n"))
	fmt.Println(err)
	// Output:
	// signer 20 vsock://20:5000 vsock://any:5101
	// scorer 21 vsock://21:5000 vsock://any:5102
	// run.yaml:2: value "many" is not valid here: write a whole number
}
