// Package kmstest runs an AWS KMS emulator for tests, in the spirit of
// net/http/httptest: an HTTPS server on a loopback port that speaks the
// KMS JSON 1.1 protocol (POST /, X-Amz-Target: TrentService.<Operation>,
// Content-Type: application/x-amz-json-1.1), so the real AWS SDK for Go v2
// KMS client (github.com/aws/aws-sdk-go-v2/service/kms) runs unchanged
// against it, including the Nitro Enclaves Recipient flow. Teams use it to
// test their own enclave code; enclavekit uses it in its tests and in
// make dev.
//
// It is for tests only. Its TLS certificate, credentials and attestation
// roots are generated or fixed for testing, and it keeps keys in memory.
//
// # Operations
//
// CreateKey (SYMMETRIC_DEFAULT, or ECC_NIST_P256/P384/P521 with KeyUsage
// KEY_AGREEMENT; an optional Policy), Encrypt, Decrypt, GenerateDataKey
// (KeySpec AES_256 or AES_128, or NumberOfBytes 1..1024),
// GenerateDataKeyPair (RSA_2048/3072/4096, ECC_NIST_P256/P384/P521: the
// public key as DER SubjectPublicKeyInfo, the private key as DER PKCS#8),
// GenerateRandom, DeriveSharedSecret (ECDH; the peer's DER
// SubjectPublicKeyInfo in, the raw x-coordinate of the shared point out)
// and GetPublicKey. Every response's KeyId is the key ARN.
//
// # What it checks
//
//   - SigV4: the Authorization header is recomputed with the SDK's own
//     signer (github.com/aws/aws-sdk-go-v2/aws/signer/v4) with the one set
//     of credentials the server accepts (Server.Credentials), and compared
//     in constant time; the credential scope must name the server's region
//     and the service kms; X-Amz-Date may be at most 15 minutes off. With
//     temporary credentials the session token must match, and expired
//     credentials are refused (ExpiredTokenException); SetCredentials
//     rotates them as the instance role's credentials rotate.
//   - Request shapes: one JSON object of at most 256 KiB, no member name
//     twice; member names and enums as the SDK's serializers write them;
//     KMS's size limits.
//   - Recipient (Decrypt, GenerateDataKey, GenerateDataKeyPair,
//     GenerateRandom, DeriveSharedSecret): KeyEncryptionAlgorithm
//     RSAES_OAEP_SHA_256; the attestation document is verified with
//     attest.Verify against Options.AttestationRoots (the NSM emulator's
//     roots, attest/nsmtest; nil refuses every Recipient) with
//     Options.DocumentMaxAge; its public key must be RSA. The answer then
//     carries CiphertextForRecipient in KMS's exact CMS shape (BER,
//     EnvelopedData v2, the recipient named by the SHA-256 of its DER
//     SubjectPublicKeyInfo, RSAES-OAEP-SHA-256, AES-256-CBC) and no
//     Plaintext, PrivateKeyPlaintext or SharedSecret. Without a Recipient
//     the answer is in plain, as at KMS.
//   - Key policies: Effect, Action (with * and ? wildcards) and Condition
//     with StringEquals / StringEqualsIgnoreCase over
//     kms:RecipientAttestation:ImageSha384 and
//     kms:RecipientAttestation:PCR<n> (lower-case hex, as KMS presents
//     them); an explicit Deny wins; no matching Allow means
//     AccessDeniedException. Any other construct (NotAction, another
//     operator or condition key, an unknown member) is refused when the key
//     is created (MalformedPolicyDocumentException), so a test never passes
//     because a condition was ignored. No policy means KMS's default key
//     policy: everything allowed.
//
// Errors use KMS's JSON shape {"__type": "NotFoundException", "message":
// "..."} with HTTP 400 (500 for KMSInternalException), so the SDK surfaces
// them as smithy.APIError with the same ErrorCode.
//
// Server.Exchanges records every request and response body, so a test can
// prove that no plaintext crossed the wire; Server.RevealPlaintext tells a
// test which bytes to look for.
//
// # What it does not emulate
//
// Principal and Resource in key policies (there is one caller), IAM
// policies, grants and grant tokens, aliases, key rotation, key states
// other than Enabled, multi-Region and imported keys, custom key stores,
// DryRun, signing and RSA keys, NitroTPM attestation documents, and
// throttling. Ciphertext blobs are the emulator's own format (AES-256-GCM
// bound to the key and encryption context); real blobs are opaque too.
package kmstest
