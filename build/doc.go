// Package build holds the reproducible-build recipe for enclave binaries and
// images: the Go flags and environment that make two builds of the same
// source byte-identical (used by build/build.mk and its tests), the
// Dockerfile, and the subpackages eif (EIF read/write/PCRs), eifsig (EIF
// signature section, PCR8) and cpio (deterministic initramfs).
//
// A binary is reproducible when it is built with
//
//	CGO_ENABLED=0 SOURCE_DATE_EPOCH=<fixed> \
//	  go build -trimpath -buildvcs=false -ldflags='-s -w -buildid=' ./cmd/enclaved
//
// by the same Go toolchain for the same GOOS/GOARCH: -trimpath removes
// file-system paths, -buildvcs=false keeps VCS state (dirty flags, commit
// times) out of the binary, -s -w drop the symbol and DWARF tables and
// -buildid= empties the build ID, which otherwise hashes action inputs.
// CGO_ENABLED=0 makes the binary static, which an enclave built FROM
// scratch needs.
package build
