package parent

import (
	"errors"
	"fmt"
)

// ErrConfig is wrapped by every configuration error of the package: those
// of Options.Validate, PoolOptions.Validate and AttestOptions.Validate, and
// so of Dial, NewPool and Client.Attest.
var ErrConfig = errors.New("parent: bad configuration")

// fieldErr reports a field whose value is not accepted, in the form the
// module's packages share: "parent: bad configuration: Options.PoolSize is
// 65, outside 1..64 (0 means the default, 2)".
func fieldErr(field string, v any, why string, args ...any) error {
	return fmt.Errorf("%w: %s is %v, %s", ErrConfig, field, v, fmt.Sprintf(why, args...))
}
