// Package kms calls AWS KMS from inside a Nitro enclave with attestation,
// so that key material reaches only code whose measurements the key policy
// names, and the parent instance never sees it.
//
// Four properties make that so.
//
//   - TLS to KMS ends inside the enclave. The HTTP client dials the
//     parent's egress route (Config.ProxyAddr, vsock://3:8000) for every
//     connection and verifies KMS's certificate here, against roots
//     compiled into the binary (golang.org/x/crypto/x509roots/fallback;
//     an enclave has no CA store), for the server name of the pinned
//     region's endpoint. The parent forwards ciphertext and cannot read or
//     alter KMS's answers.
//   - Every call that returns secret material (Decrypt, GenerateDataKey,
//     GenerateDataKeyPair, GenerateRandom, DeriveSharedSecret) sends a
//     Recipient: an NSM attestation document carrying the public half of an
//     RSA-2048 key that exists only in this process (renewed every
//     Config.RecipientKeyLifetime). KMS checks the document and the key
//     policy's kms:RecipientAttestation conditions (ImageSha384 = PCR0,
//     PCR<n>) and returns CiphertextForRecipient, a CMS envelope this
//     package opens with a narrow, strict parser (OpenRecipient). Results
//     are protocol.Secret. An answer that carries a plaintext anyway is
//     discarded (ErrPlaintextReturned).
//   - The enclave pins what it trusts. The parent supplies the AWS
//     credentials, so it chooses the account: it could hand over
//     credentials of an account it controls and a key it can decrypt with.
//     The key ARNs the client may use (Config.Keys) are therefore part of
//     the enclave's measured configuration; requests for other keys are
//     refused before they are sent, answers naming another key are
//     refused, and the region (endpoint, TLS name, SigV4 scope) comes from
//     the pinned ARNs.
//   - Credentials are Secrets. The parent pushes the instance role's
//     credentials with the enclavekit.credentials method into a
//     CredentialStore, which serves them to the SDK and never logs them.
//
// Seal and Open keep application state across restarts (an enclave has no
// disk): the state is encrypted with a fresh data key from GenerateDataKey,
// and the sealed blob, stored anywhere, opens only in an enclave that the
// key policy allows.
//
// Package kmstest is a KMS emulator for tests, driven by the same SDK
// client; docs/kms.md has the key policy, the IAM role, the proxy route
// and the steps to check it on EC2.
package kms
