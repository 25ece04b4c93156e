// Package eif reads and writes AWS Nitro Enclaves image files (EIF) and
// computes their platform configuration registers (PCRs).
//
// # Format
//
// The layout follows aws/aws-nitro-enclaves-image-format (src/defs/mod.rs for
// the structures, src/utils/mod.rs for the builder, src/utils/eif_reader.rs for
// the reader that nitro-cli describe-eif uses). All integers are big-endian.
//
//	header (548 bytes)
//	  magic        [4]byte  ".eif"
//	  version      uint16   4 (v2 added the CRC, v3 the signature, v4 the metadata)
//	  flags        uint16   bit 0: arm64 (cleared for x86_64)
//	  default_mem  uint64   bytes
//	  default_cpus uint64
//	  reserved     uint16
//	  num_sections uint16   at most 32
//	  offsets      [32]uint64  file offset of each section header
//	  sizes        [32]uint64  data size of each section (header excluded)
//	  unused       uint32
//	  crc32        uint32   CRC-32/IEEE of the whole file except these 4 bytes
//	then num_sections times:
//	  section header (12 bytes): type uint16, flags uint16, size uint64
//	  section data (size bytes)
//
// Section types are 1 kernel, 2 cmdline, 3 ramdisk, 4 signature, 5 metadata;
// nitro-cli writes them in the order kernel, cmdline, metadata, ramdisk...,
// signature. The cmdline is stored without a terminating NUL (and contains
// none). Metadata is JSON (EifIdentityInfo), mandatory since version 4, and
// not measured; the kernel section must not be empty and the signature
// section holds at most 32768 bytes (the format description in the
// aws-nitro-enclaves-image-format README).
//
// The golden images in testdata were written by an independent encoder
// (testdata/gen_golden.py: Python struct, zlib.crc32 and hashlib, written
// from that README) and Build must reproduce them byte for byte.
//
// # Measurements
//
// With H = SHA-384 and Z = 48 zero bytes (one TPM-style extend of a zeroed
// register, as EifHasher::tpm_extend_finalize_reset does):
//
//	PCR0 = H(Z ‖ H(kernel ‖ cmdline ‖ ramdisk[0] ‖ … ‖ ramdisk[n-1]))
//	PCR1 = H(Z ‖ H(kernel ‖ cmdline ‖ ramdisk[0]))
//	PCR2 = H(Z ‖ H(ramdisk[1] ‖ … ‖ ramdisk[n-1]))
//	PCR8 = H(Z ‖ H(DER of the signing certificate))
//
// Debug-mode enclaves report all-zero PCRs regardless of the image.
//
// # Parsing
//
// [Parse] is strict in the manner of golang.org/x/crypto/cryptobyte: every
// count, size and offset is checked against the bytes actually present before
// it is used, nothing is allocated from a size read from the file, sections
// are sub-slices of the input, the header tables must agree with the section
// headers, unused table entries must be zero and trailing bytes are rejected.
//
// The signature section is a CBOR structure; this package keeps it as raw
// bytes so that it depends only on the standard library. Package
// github.com/enclavekit/enclavekit/build/eifsig decodes and produces it and
// computes PCR8.
package eif
