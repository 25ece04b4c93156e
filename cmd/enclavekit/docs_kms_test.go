package main

import (
	"bytes"
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestKMSDocCommands runs the commands of docs/kms.md outside its EC2
// block: the policy for an EIF (the golden test image stands for
// enclave.eif), enclaved with a pinned key (on loopback, in development
// mode: it must accept the flag and start), the credential push (it must
// fail only to reach an enclave, with the hint) and unwrap of the real
// sample (the plaintext the page states).
func TestKMSDocCommands(t *testing.T) {
	var cmds []docCommand
	for _, c := range docCommands(t, "../../docs/kms.md") {
		if !c.ec2 {
			cmds = append(cmds, c)
		}
	}
	if len(cmds) != 4 {
		t.Fatalf("docs/kms.md has %d commands outside its EC2 block, want the 4 this test knows", len(cmds))
	}
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	closedAddr := "tcp://" + closed.Addr().String()
	closed.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var bg sync.WaitGroup
	defer func() { cancel(); bg.Wait() }()
	for _, c := range cmds {
		t.Logf("doc command: %s", c.line)
		args := strings.Fields(c.line)
		switch args[0] {
		case "enclaved":
			args = append(args[1:], "--dev", "--nsm", "emulated", "--listen", "tcp://127.0.0.1:0", "--log-sink", "none")
			_, _, out := startEnclaved(t, ctx, &bg, args, 30*time.Second)
			waitFor(t, func() bool { return strings.Contains(out.String(), "KMS enabled") })
			if !strings.Contains(out.String(), "endpoint=kms.eu-west-1.amazonaws.com") {
				t.Errorf("enclaved does not take the endpoint from the pinned key's region:\n%s", out.String())
			}
		case "enclavekit":
			for i, a := range args {
				switch {
				case a == "enclave.eif":
					args[i] = "../../build/eif/testdata/golden_v4.eif"
				case strings.HasPrefix(a, "vsock://"):
					args[i] = closedAddr
				case strings.HasPrefix(a, "enclave/kms/"):
					args[i] = "../../" + a
				}
			}
			var stdout, stderr bytes.Buffer
			code := run(ctx, args[1:], &stdout, &stderr)
			switch args[1] {
			case "kms":
				if code != exitOK {
					t.Fatalf("%s: exit %d: %s", c.line, code, stderr.String())
				}
				if args[2] == "unwrap" && strings.TrimSpace(stdout.String()) != "3be82c440f06cb4d44c4c2ec3bf30d472407d3a9125aa4c1842b98f6bdd26e41" {
					t.Errorf("unwrap printed %q, not what the page states", stdout.String())
				}
				if args[2] == "policy" && !strings.Contains(stdout.String(), "kms:RecipientAttestation:ImageSha384") {
					t.Errorf("policy printed no ImageSha384 condition:\n%s", stdout.String())
				}
			case "credentials":
				// No enclave answers here: it must fail to connect, nothing else.
				if code != exitFailure || !strings.Contains(stderr.String(), "dialing") {
					t.Fatalf("%s: exit %d, %q", c.line, code, stderr.String())
				}
			default:
				t.Fatalf("a command this test does not know: %s", c.line)
			}
		default:
			t.Fatalf("a command this test does not know: %s", c.line)
		}
	}
}
