package protocol

import "github.com/fxamacker/cbor/v2"

// idDecMode reads just enough of an envelope to find its request id (key 1):
// lenient about unknown keys and values, strict about duplicate keys (a
// duplicated id is ambiguous), indefinite lengths and tags.
var idDecMode = func() cbor.DecMode {
	dm, err := cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		IndefLength:      cbor.IndefLengthForbidden,
		TagsMd:           cbor.TagsForbidden,
		MaxNestedLevels:  8,
		MaxArrayElements: 1024,
		MaxMapPairs:      1024,
	}.DecMode()
	if err != nil {
		panic(err)
	}
	return dm
}()

// RecoverID returns the request id (key 1) of a payload that may not be a
// valid envelope, so that a server can answer a malformed request with a
// "bad request" response its caller can match. ok is false when no
// unambiguous unsigned id can be found; the id is then 0.
func RecoverID(payload []byte) (id uint64, ok bool) {
	var v struct {
		ID *uint64 `cbor:"1,keyasint"`
	}
	if err := idDecMode.Unmarshal(payload, &v); err != nil || v.ID == nil {
		return 0, false
	}
	return *v.ID, true
}
