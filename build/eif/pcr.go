package eif

import (
	"crypto/sha512"
	"encoding/hex"
	"hash"
	"sync"
)

// PCRSize is the size of a SHA-384 PCR.
const PCRSize = sha512.Size384

// PCR is one SHA-384 platform configuration register value.
type PCR [PCRSize]byte

// String returns the lower-case hex form nitro-cli prints.
func (p PCR) String() string { return hex.EncodeToString(p[:]) }

// Measurements are the PCRs an image produces when it runs outside debug mode.
type Measurements struct {
	PCR0 PCR  // kernel, cmdline and every ramdisk
	PCR1 PCR  // kernel, cmdline and the first (bootstrap) ramdisk
	PCR2 PCR  // the remaining (application) ramdisks
	PCR8 *PCR // signing certificate; nil for an unsigned image
}

// HashAlgorithm is the value nitro-cli prints in Measurements.HashAlgorithm
// (Rust's Debug format of sha2::Sha384).
const HashAlgorithm = "Sha384 { ... }"

// Extend returns H(Z ‖ digest): one PCR extend of a zeroed register, as
// EifHasher::tpm_extend_finalize_reset does in
// aws-nitro-enclaves-image-format src/defs/eif_hasher.rs.
func Extend(digest []byte) PCR {
	var zero [PCRSize]byte
	h := sha512.New384()
	h.Write(zero[:])
	h.Write(digest)
	var p PCR
	h.Sum(p[:0])
	return p
}

// PCR8 computes PCR8 from the DER encoding of the signing certificate.
func PCR8(certDER []byte) PCR {
	d := sha512.Sum384(certDER)
	return Extend(d[:])
}

// parallelMin is the size of the application ramdisks above which PCR0 and
// PCR2 are hashed on two goroutines.
const parallelMin = 1 << 20

// Measure computes PCR0, PCR1 and PCR2 for the given sections. It hashes the
// kernel, cmdline and bootstrap ramdisk once (cloning the SHA-384 state for
// PCR0) and the application ramdisks twice, concurrently when they are large.
func Measure(kernel, cmdline []byte, ramdisks [][]byte) Measurements {
	boot := sha512.New384()
	boot.Write(kernel)
	boot.Write(cmdline)
	if len(ramdisks) > 0 {
		boot.Write(ramdisks[0])
	}
	image := clone(boot)
	app := sha512.New384()
	rest := ramdisks
	if len(rest) > 0 {
		rest = rest[1:]
	}
	n := 0
	for _, r := range rest {
		n += len(r)
	}
	if n >= parallelMin {
		var wg sync.WaitGroup
		wg.Go(func() {
			for _, r := range rest {
				app.Write(r)
			}
		})
		for _, r := range rest {
			image.Write(r)
		}
		wg.Wait()
	} else {
		for _, r := range rest {
			image.Write(r)
			app.Write(r)
		}
	}
	return Measurements{
		PCR0: Extend(image.Sum(nil)),
		PCR1: Extend(boot.Sum(nil)),
		PCR2: Extend(app.Sum(nil)),
	}
}

func clone(h hash.Hash) hash.Hash {
	if c, ok := h.(hash.Cloner); ok {
		if cc, err := c.Clone(); err == nil {
			return cc
		}
	}
	panic("eif: SHA-384 state cannot be cloned") // crypto/sha512 always can
}

// Measure computes the image's PCR0, PCR1 and PCR2. PCR8 needs the signing
// certificate, which lives in the CBOR signature section; see package
// build/eifsig.
func (img *Image) Measure() Measurements {
	return Measure(img.Kernel, img.Cmdline, img.Ramdisks)
}
