// Package cpio writes and reads deterministic cpio archives in the "newc"
// (SVR4, magic 070701) format the Linux kernel unpacks as an initramfs, and
// builds the two ramdisks of a Nitro Enclave image from plain files, so an
// EIF can be built without Docker or linuxkit.
//
// # Determinism
//
// Every entry has owner 0:0, the same modification time (Options.MTime,
// normally SOURCE_DATE_EPOCH), inode numbers assigned 1, 2, 3… in archive
// order, nlink 2 for directories and 1 otherwise, and device numbers 0.
// Entries are written in the order given; the ramdisk builders sort paths
// so that a parent always precedes its children. Archives are not
// compressed: compressor output can change between Go releases.
//
// # Format
//
// Each entry is a 110-byte ASCII header ("070701" then 13 eight-digit hex
// fields: ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor,
// rdevmajor, rdevminor, namesize, check), the NUL-terminated name, padding
// to a multiple of 4, the data, padding to a multiple of 4. The archive ends
// with an entry named "TRAILER!!!". See the kernel's
// Documentation/driver-api/early-userspace/buffer-format.rst.
//
// # Nitro ramdisk layout
//
// nitro-cli (aws-nitro-enclaves-cli enclave_build/src/yaml_generator.rs)
// builds a bootstrap ramdisk holding dev/, init and nsm.ko (the blobs it
// installs under /usr/share/nitro_enclaves/blobs/), and an application
// ramdisk holding the container filesystem under rootfs/, the directories
// rootfs/{dev,proc,run,sys,tmp,var}, and two files at the top: cmd (the
// image's CMD, one argument per line) and env (its environment, one
// NAME=value per line), which init reads to start the application. The
// layouts here follow that; the bytes differ from linuxkit's, so PCR1 and
// PCR2 differ from a nitro-cli build of the same inputs, but they are
// reproducible.
package cpio
