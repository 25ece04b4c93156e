package cms

import "errors"

// Limits of the BER-to-DER step. A CiphertextForRecipient holds at most a
// 4 KiB plaintext (KMS's largest, from GenerateRandom or a Decrypt of a
// 4 KiB Encrypt), so 64 KiB is far above anything genuine; the deepest
// element in KMS's shape (the hash inside MGF1's parameters) sits at depth
// 10.
const (
	MaxSize  = 64 << 10
	maxDepth = 16
	// maxElements bounds the work per input: KMS's shape has 30 elements
	// plus one per 1 KiB content chunk.
	maxElements = 512
)

var errBER = errors.New("cms: not BER")

// toDER rewrites a BER encoding as DER as far as lengths go: every
// indefinite length (constructed elements only, ended by 00 00) becomes a
// definite one, and every length is written in its shortest form. The
// identifier octets, the constructed or primitive form, and the contents
// of primitive elements are copied unchanged, so the result is parsed by
// encoding/asn1, which refuses everything else DER forbids. Exactly one
// element must fill b. BER is ITU-T X.690 section 8; DER section 10.
//
// Input is refused beyond MaxSize, nesting beyond maxDepth, more than
// maxElements elements, high tag numbers (KMS uses none), long-form lengths
// over four octets or not minimal, indefinite lengths on primitive
// elements, and end-of-contents octets anywhere but closing an indefinite
// length. Nothing is allocated from a length read off the input: the
// output grows with the elements actually present.
func toDER(b []byte) ([]byte, error) {
	if len(b) > MaxSize {
		return nil, errBER
	}
	d := derWriter{budget: maxElements}
	rest, err := d.element(b, 0)
	if err != nil || len(rest) != 0 {
		return nil, errBER
	}
	return d.out, nil
}

type derWriter struct {
	out    []byte
	budget int
}

// element copies the element at the start of b to d.out and returns the
// bytes after it.
func (d *derWriter) element(b []byte, depth int) ([]byte, error) {
	if depth > maxDepth || d.budget == 0 {
		return nil, errBER
	}
	d.budget--
	if len(b) < 2 {
		return nil, errBER
	}
	id, l := b[0], b[1]
	b = b[2:]
	if id&0x1f == 0x1f || id == 0 { // high tag number form; end-of-contents
		return nil, errBER
	}
	constructed := id&0x20 != 0
	if l == 0x80 { // indefinite
		if !constructed {
			return nil, errBER
		}
		start := d.open(id)
		for {
			if len(b) >= 2 && b[0] == 0 && b[1] == 0 {
				d.close(start)
				return b[2:], nil
			}
			var err error
			if b, err = d.element(b, depth+1); err != nil {
				return nil, err
			}
		}
	}
	n, b, err := definiteLength(l, b)
	if err != nil {
		return nil, err
	}
	content, rest := b[:n], b[n:]
	if !constructed {
		d.out = append(d.out, id)
		d.out = appendLength(d.out, n)
		d.out = append(d.out, content...)
		return rest, nil
	}
	start := d.open(id)
	for len(content) > 0 {
		if content, err = d.element(content, depth+1); err != nil {
			return nil, err
		}
	}
	d.close(start)
	return rest, nil
}

// definiteLength decodes a definite length whose first octet is l and
// whose further octets start b; it checks the length against what is left.
func definiteLength(l byte, b []byte) (int, []byte, error) {
	if l < 0x80 {
		if int(l) > len(b) {
			return 0, nil, errBER
		}
		return int(l), b, nil
	}
	k := int(l & 0x7f)
	if k > 4 || k > len(b) || b[0] == 0 { // 0xff is reserved (k = 127)
		return 0, nil, errBER
	}
	n := 0
	for _, c := range b[:k] {
		n = n<<8 | int(c)
	}
	if n < 0x80 || n > len(b)-k { // long form where short form fits; truncated
		return 0, nil, errBER
	}
	return n, b[k:], nil
}

// open writes the identifier of a constructed element and reserves its
// length: contents are written after it and close moves them into place.
func (d *derWriter) open(id byte) int {
	d.out = append(d.out, id)
	return len(d.out)
}

// close inserts the definite length of everything written since open.
func (d *derWriter) close(start int) {
	n := len(d.out) - start
	var hdr [5]byte
	h := appendLength(hdr[:0], n)
	d.out = append(d.out, h...) // grow by len(h)
	copy(d.out[start+len(h):], d.out[start:start+n])
	copy(d.out[start:], h)
}

// appendLength appends the DER length n.
func appendLength(b []byte, n int) []byte {
	switch {
	case n < 0x80:
		return append(b, byte(n))
	case n < 1<<8:
		return append(b, 0x81, byte(n))
	case n < 1<<16:
		return append(b, 0x82, byte(n>>8), byte(n))
	case n < 1<<24:
		return append(b, 0x83, byte(n>>16), byte(n>>8), byte(n))
	default:
		return append(b, 0x84, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
}
