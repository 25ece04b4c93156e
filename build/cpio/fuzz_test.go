package cpio

import (
	"bytes"
	"testing"
)

// FuzzRead checks that Read never panics and that an archive it accepts,
// written back with the same metadata, reads back the same.
func FuzzRead(f *testing.F) {
	b, _ := Application(App{Binary: []byte("bin"), Files: []File{{Path: "etc/x", Mode: 0o644, Data: []byte("x")}}}, Options{MTime: 5})
	f.Add(b)
	b, _ = Bootstrap([]byte("i"), []byte("n"), Options{})
	f.Add(b)
	f.Fuzz(func(t *testing.T, in []byte) {
		files, _, err := Read(in)
		if err != nil {
			return
		}
		if Validate(files) != nil {
			return // unordered or duplicate entries are readable but not writable
		}
		out, err := Marshal(files, Options{})
		if err != nil {
			t.Fatal(err)
		}
		again, _, err := Read(out)
		if err != nil || len(again) != len(files) {
			t.Fatalf("re-read: %v", err)
		}
		for i := range again {
			if again[i].Path != files[i].Path || again[i].Mode != files[i].Mode || !bytes.Equal(again[i].Data, files[i].Data) {
				t.Fatalf("entry %d changed", i)
			}
		}
	})
}
