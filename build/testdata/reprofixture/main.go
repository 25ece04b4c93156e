// Command reprofixture is a small program the reproducibility test builds
// twice from different directories; it uses enough of the standard library
// (reflection, crypto, embedded paths in panics) to notice leaked paths or
// build IDs.
package main

import (
	"crypto/sha512"
	"encoding/json"
	"fmt"
	"os"
	"runtime/debug"
)

func main() {
	info, _ := debug.ReadBuildInfo()
	sum := sha512.Sum384([]byte(os.Args[0]))
	b, _ := json.Marshal(map[string]any{"sum": fmt.Sprintf("%x", sum[:4]), "main": info.Main.Path})
	fmt.Println(string(b))
}
