package build_test

import (
	"fmt"
	"strings"

	"github.com/enclavekit/enclavekit/build"
)

func Example() {
	c := build.Command{Package: "./cmd/enclaved", Output: "bin/enclaved", SourceDateEpoch: 1700000000, GOOS: "linux"}
	if err := c.Validate(); err != nil {
		panic(err)
	}
	// c.Run(ctx) runs: go build <flags> -o bin/enclaved ./cmd/enclaved
	fmt.Println(strings.Join(build.Flags, " "))
	env := build.Env(nil, c.SourceDateEpoch, c.GOOS, c.GOARCH)
	fmt.Println(strings.Join(env, " "))
	// Output:
	// -trimpath -buildvcs=false -ldflags=-s -w -buildid=
	// CGO_ENABLED=0 SOURCE_DATE_EPOCH=1700000000 GOFLAGS= GOOS=linux
}
