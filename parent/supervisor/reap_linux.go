package supervisor

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// becomeSubreaper makes this process the parent of orphaned descendants:
// nitro-cli run-enclave leaves the enclave's process running after it
// exits, and without this, in a container, nobody may reap it.
func becomeSubreaper() error {
	return unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
}

// reap collects pid's exit status if it is (or becomes, within wait) a
// child of this process that exited. It returns how it ended ("" if that
// is unknown) and whether pid needs no more reaping: false only while it
// is our child and still runs.
func reap(pid int, wait time.Duration) (string, bool) {
	if pid <= 0 {
		return "", true
	}
	deadline := time.Now().Add(wait)
	for {
		var ws unix.WaitStatus
		got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return "", true // ECHILD: not ours, or reaped already
		case got == pid:
			switch {
			case ws.Signaled():
				return fmt.Sprintf("process %d killed by signal %v", pid, ws.Signal()), true
			case ws.Exited():
				return fmt.Sprintf("process %d exited with status %d", pid, ws.ExitStatus()), true
			}
			continue
		}
		if time.Now().After(deadline) {
			return "", false
		}
		time.Sleep(10 * time.Millisecond)
	}
}
