package protocol

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"
)

func TestRemoteErrorMatchesSentinel(t *testing.T) {
	sentinels := []error{ErrBadRequest, ErrUnknownMethod, ErrTooLarge, ErrTimeout, ErrUnavailable, ErrUnauthenticated, ErrInternal}
	for i, s := range sentinels {
		code := Code(i + 1)
		var err error = &RemoteError{Code: code, Message: code.Message()}
		err = fmt.Errorf("call: %w", err)
		for j, other := range sentinels {
			if got := errors.Is(err, other); got != (i == j) {
				t.Errorf("errors.Is(remote %v, %v) = %v", code, other, got)
			}
		}
		if CodeOf(err) != code {
			t.Errorf("CodeOf(remote %v) = %v", code, CodeOf(err))
		}
		if CodeOf(fmt.Errorf("wrapped: %w", s)) != code {
			t.Errorf("CodeOf(wrapped %v) = %v", s, CodeOf(s))
		}
		if code.Sentinel() != s {
			t.Errorf("%v.Sentinel() = %v", code, code.Sentinel())
		}
	}
}

func TestCodeOf(t *testing.T) {
	tests := []struct {
		err  error
		want Code
	}{
		{nil, CodeOK},
		{errors.New("disk on fire"), CodeInternal},
		{context.DeadlineExceeded, CodeTimeout},
		{fmt.Errorf("x: %w", ErrFrameTooLarge), CodeTooLarge},
		{&RemoteError{Code: 99}, CodeInternal},
	}
	for _, tt := range tests {
		if got := CodeOf(tt.err); got != tt.want {
			t.Errorf("CodeOf(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

func TestCodeStrings(t *testing.T) {
	for c := CodeOK; c <= maxCode; c++ {
		if c.String() == "" || !c.Valid() {
			t.Errorf("code %d has no name", c)
		}
	}
	if Code(8).Valid() || Code(8).String() != "code(8)" || Code(8).Sentinel() != nil {
		t.Error("code 8 is not handled as undefined")
	}
}

func TestSecretIsNotComparable(t *testing.T) {
	if reflect.TypeFor[Secret]().Comparable() {
		t.Fatal("Secret must not be comparable with ==")
	}
}
