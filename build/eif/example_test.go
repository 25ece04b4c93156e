package eif_test

import (
	"fmt"

	"github.com/enclavekit/enclavekit/build/eif"
)

func Example() {
	md := eif.Metadata{ImageName: "hello", ImageVersion: "1.0",
		BuildMetadata: eif.BuildInfo{BuildTime: "2024-01-01T00:00:00Z", BuildTool: "enclavekit"}}
	mdJSON, err := md.Marshal()
	if err != nil {
		panic(err)
	}
	file, m, err := eif.Build(eif.Spec{
		Kernel:   []byte("kernel"),
		Cmdline:  "console=ttyS0",
		Ramdisks: [][]byte{[]byte("bootstrap"), []byte("application")},
		Metadata: mdJSON,
	})
	if err != nil {
		panic(err)
	}
	img, err := eif.Parse(file)
	if err != nil {
		panic(err)
	}
	fmt.Println(len(file), "bytes,", len(img.Ramdisks), "ramdisks")
	fmt.Println("PCR0", m.PCR0)
	fmt.Println("PCR1", m.PCR1)
	fmt.Println("PCR2", img.Measure().PCR2)
	// Output:
	// 869 bytes, 2 ramdisks
	// PCR0 c8ef9e29e54e0ea8fcce5e2ebf76aed41ac9d9efd2c6ec0c0025653152a9fbdcb3ca51d0e6f7049de955c6cab8f3cb13
	// PCR1 d27120bc1b5caeb3c37759a3ade08725eaa6bee6eba54755079e6fe20c5543aab0b2f2d91da7eac80a95c063f3b68540
	// PCR2 8a45599e5e77b24c4b6472869c24e10490c4d5df715fbd0811fc4b33d370276cf00bb24871d3a1987587d6b9283d4f42
}
