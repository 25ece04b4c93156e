package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"
)

// parseArgs parses flags that may appear before, between or after the
// positional arguments, and returns the positional ones; "--" ends the
// flags. Bad values of durations and numbers say what is wanted.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := parseFlagSet(fs, args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		// flag stops at "--" (consumed) or at the first non-flag.
		if len(args) >= len(rest)+1 && args[len(args)-len(rest)-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// flagExit maps a flag parsing error to an exit code: -h is not an error.
func flagExit(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	return exitUsage
}

// badValue matches the flag package's message for a value it cannot parse.
var badValue = regexp.MustCompile(`^invalid value "(.*)" for flag -([^:]+): (parse error|value out of range)`)

// parseFlagSet is fs.Parse, except that the line saying what is wrong
// comes before the usage, and a bad duration or number says what is
// wanted ("want a duration such as 10s") instead of the flag package's
// "parse error".
func parseFlagSet(fs *flag.FlagSet, args []string) error {
	out, usage := fs.Output(), fs.Usage
	if usage == nil {
		usage = func() {
			fmt.Fprintf(out, "usage of %s:\n", fs.Name())
			fs.PrintDefaults()
		}
	}
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	err := fs.Parse(args)
	fs.SetOutput(out)
	fs.Usage = usage
	switch {
	case err == nil:
		return nil
	case errors.Is(err, flag.ErrHelp):
		usage()
		return err
	}
	if m := badValue.FindStringSubmatch(err.Error()); m != nil {
		if want := wantOf(fs.Lookup(m[2])); want != "" {
			err = fmt.Errorf("invalid value %q for flag -%s: want %s", m[1], m[2], want)
		}
	}
	name := fs.Name()
	if !strings.HasPrefix(name, "enclavekit") {
		name = "enclavekit " + name
	}
	fmt.Fprintf(out, "%s: %v\n", name, err)
	usage()
	return err
}

// wantOf describes the values flag f takes, for the flag types whose
// parse errors say nothing.
func wantOf(f *flag.Flag) string {
	if f == nil {
		return ""
	}
	g, ok := f.Value.(flag.Getter)
	if !ok {
		return ""
	}
	switch g.Get().(type) {
	case time.Duration:
		return "a duration such as 10s, 1m30s or 500ms"
	case int, int64:
		return "a whole number"
	case uint, uint64:
		return "a whole number, 0 or more"
	case float64:
		return "a number"
	}
	return ""
}

// usageFail prints one line saying what is wrong and how to fix it, then
// fs's usage, and returns the usage exit code.
func usageFail(fs *flag.FlagSet, stderr io.Writer, format string, args ...any) int {
	fmt.Fprintf(stderr, format+"\n", args...)
	if fs.Usage != nil {
		fs.Usage()
	}
	return exitUsage
}
