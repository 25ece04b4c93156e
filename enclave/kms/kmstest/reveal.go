package kmstest

import "errors"

// RevealPlaintext returns what the emulator would decrypt a ciphertext
// blob to, with no request, no policy and no Recipient. It exists so a
// test can learn a data key that only the enclave should hold, and then
// look for it where it must never appear (bytes that crossed the parent's
// proxy, log lines). Real KMS has no such door; nothing outside tests may
// rely on it.
func (s *Server) RevealPlaintext(ciphertextBlob []byte, encryptionContext map[string]string) ([]byte, error) {
	blob, err := parseCiphertextBlob(ciphertextBlob)
	if err != nil {
		return nil, err
	}
	k, e := s.lookup(blob.keyID)
	if e != nil {
		return nil, errors.New(e.Message)
	}
	return k.open(blob, encryptionContext)
}
