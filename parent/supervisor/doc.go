// Package supervisor runs enclaves and everything the parent runs beside
// them, from one configuration file (`enclavekit run --config run.yaml`).
//
// For each enclave (at most four per instance) it starts the enclave with
// nitro-cli run-enclave (the EIF, CPUs, memory and CID from the file;
// --debug-mode only when the file says debug: true, and then with a loud
// warning), a log sink for it, and its ingress ports; beside them it runs
// the egress routes of the file. It waits for each enclave to answer
// enclavekit.health, probes it every interval, and asks nitro-cli
// describe-enclaves whether it still runs. A crashed enclave, or one that
// failed Health.Failures probes in a row, is terminated and started again
// after a backoff that doubles up to Restart.MaxBackoff. When a run ends,
// the supervisor logs the run's last log records and what nitro-cli
// reported (exit status, output, the enclave's last state).
//
// It serves /healthz (the supervisor itself makes progress), /readyz (every enclave
// answers its probes) and /metrics (Prometheus). On SIGTERM it reports not
// ready, stops accepting on the ingress and lets open connections finish
// (DrainTimeout), terminates the enclaves with nitro-cli terminate-enclave,
// then stops the log sinks and egress routes.
//
// The parent is the enclave's adversary in the threat model: nothing the
// supervisor does is trusted by the enclave. It only decides when an
// enclave runs; what the enclave accepts is decided inside it.
//
// CIDs and parent vsock ports: enclave i gets CID 16+i and log sink port
// 5001+i unless the file says otherwise; Config.Slot moves every CID by
// 4 and every parent vsock port by 100 per slot, so that several
// supervisors (pods) on one instance never collide. The configuration
// refuses duplicate CIDs, duplicate parent vsock ports and more than four
// enclaves; Config.Assignments reports the result.
//
// nitro-cli is run as a command (Config.NitroCLI), and its JSON output is
// read in the shape nitro-cli prints; tests run a fake in its place.
package supervisor
