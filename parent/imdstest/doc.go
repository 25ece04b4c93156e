// Package imdstest runs an in-process emulator of the EC2 Instance Metadata
// Service, version 2 only, for tests, in the spirit of net/http/httptest: an
// HTTP server on a loopback port that the real AWS SDK IMDS client
// (github.com/aws/aws-sdk-go-v2/feature/ec2/imds, Options.Endpoint =
// Server.URL) talks to unchanged. It serves what the parent needs to read
// the instance role's credentials and its region:
//
//	PUT /latest/api/token                            a session token; header
//	    X-aws-ec2-metadata-token-ttl-seconds: 1..21600 (else 400); a request
//	    with X-Forwarded-For is refused (403), as IMDS does
//	GET /latest/meta-data/iam/security-credentials/  the role name
//	GET /latest/meta-data/iam/security-credentials/ROLE
//	    {"Code":"Success","LastUpdated":…,"Type":"AWS-HMAC","AccessKeyId":…,
//	     "SecretAccessKey":…,"Token":…,"Expiration":…} (times in RFC 3339, UTC)
//	GET /latest/meta-data/iam/info                   the instance profile
//	GET /latest/meta-data/placement/region, placement/availability-zone,
//	    instance-id, instance-type
//	GET /latest/dynamic/instance-identity/document   JSON with the region
//
// Every GET needs a valid, unexpired token in X-aws-ec2-metadata-token
// (401 without, as on an instance that requires IMDSv2); other methods are
// 405 and unknown paths 404. The credentials can be rotated, replaced or
// given another expiration while the server runs, and tokens can be
// expired at once, to test a credential pusher's refresh. Requests()
// returns a log of requests (method, path, status; never a token or a
// credential).
//
// It is for tests only: the credentials it serves are random strings that
// open nothing. It does not emulate IMDSv1, the hop limit, user data,
// network interfaces, tags, spot or maintenance events, or throttling.
package imdstest
