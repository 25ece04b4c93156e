//go:build linux

package transport

import (
	"context"
	"net"
	"strconv"

	"github.com/mdlayher/vsock"
)

func listenVsock(cid, port uint32) (net.Listener, error) {
	return vsock.ListenContextID(cid, port, nil)
}

func dialVsock(ctx context.Context, cid, port uint32) (net.Conn, error) {
	return vsock.DialContext(ctx, cid, port, nil)
}

func vsockAddrString(na net.Addr) string {
	if a, ok := na.(*vsock.Addr); ok {
		cid := strconv.FormatUint(uint64(a.ContextID), 10)
		if a.ContextID == CIDAny {
			cid = "any"
		}
		return "vsock://" + cid + ":" + strconv.FormatUint(uint64(a.Port), 10)
	}
	return "vsock://" + na.String()
}

// LocalCID returns this machine's vsock context ID (3 on a parent instance,
// 16 or more inside an enclave).
func LocalCID() (uint32, error) { return vsock.ContextID() }
