package cpio_test

import (
	"fmt"

	"github.com/enclavekit/enclavekit/build/cpio"
)

func Example() {
	// In production, init and nsm.ko come from /usr/share/nitro_enclaves/blobs/
	// and the binary from "make enclaved".
	opts := cpio.Options{MTime: 1700000000} // SOURCE_DATE_EPOCH
	boot, err := cpio.Bootstrap([]byte("init blob"), []byte("nsm.ko blob"), opts)
	if err != nil {
		panic(err)
	}
	app, err := cpio.Application(cpio.App{Binary: []byte("static binary"), Cmd: []string{"/enclaved", "-v"}}, opts)
	if err != nil {
		panic(err)
	}
	files, _, err := cpio.Read(app)
	if err != nil {
		panic(err)
	}
	fmt.Println("bootstrap:", len(boot), "bytes")
	for _, f := range files {
		fmt.Println(f.Mode, f.Path)
	}
	// Output:
	// bootstrap: 500 bytes
	// -rw-r--r-- cmd
	// -rw-r--r-- env
	// drwxr-xr-x rootfs
	// drwxr-xr-x rootfs/dev
	// -rwxr-xr-x rootfs/enclaved
	// drwxr-xr-x rootfs/proc
	// drwxr-xr-x rootfs/run
	// drwxr-xr-x rootfs/sys
	// drwxr-xr-x rootfs/tmp
	// drwxr-xr-x rootfs/var
}
