package parent

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"

	"github.com/enclavekit/enclavekit/protocol"
)

// PushCredentials sends AWS credentials to the enclave's credential store
// (the enclavekit.credentials method), for the enclave's own calls to AWS
// such as KMS. The enclave refuses malformed or expired credentials with a
// bad-request error naming the field.
func (c *Client) PushCredentials(ctx context.Context, creds aws.Credentials) error {
	req := protocol.CredentialsRequest{
		AccessKeyID:     creds.AccessKeyID,
		SecretAccessKey: []byte(creds.SecretAccessKey),
		SessionToken:    []byte(creds.SessionToken),
	}
	defer protocol.Zero(req.SecretAccessKey)
	defer protocol.Zero(req.SessionToken)
	if creds.CanExpire {
		req.ExpiresUnix = creds.Expires.Unix()
	}
	body, err := protocol.Marshal(&req)
	if err != nil {
		return fmt.Errorf("parent: encoding the credentials: %w", err)
	}
	defer protocol.Zero(body)
	if _, err := c.CallRaw(ctx, protocol.MethodCredentials, body); err != nil {
		return fmt.Errorf("parent: pushing credentials for %s: %w", creds.AccessKeyID, err)
	}
	return nil
}

// ErrIMDS wraps every failure to read role credentials from IMDS.
var ErrIMDS = errors.New("parent: reading the instance role's credentials from IMDSv2")

// IMDSCredentials reads the instance role's credentials with the AWS SDK's
// IMDSv2 client (session tokens, as IMDSv2 requires). It implements
// aws.CredentialsProvider.
type IMDSCredentials struct {
	// Client is the SDK's IMDS client. Default imds.New(imds.Options{}),
	// which talks to 169.254.169.254 (or AWS_EC2_METADATA_SERVICE_ENDPOINT).
	Client *imds.Client
	// Role is the instance profile role. Default: the one role IMDS lists.
	Role string
}

// maxIMDSBody bounds what is read from one IMDS answer.
const maxIMDSBody = 64 << 10

// Retrieve reads the role's current credentials.
func (p *IMDSCredentials) Retrieve(ctx context.Context) (aws.Credentials, error) {
	client := p.Client
	if client == nil {
		client = imds.New(imds.Options{})
	}
	get := func(path string) ([]byte, error) {
		out, err := client.GetMetadata(ctx, &imds.GetMetadataInput{Path: path})
		if err != nil {
			return nil, err
		}
		defer out.Content.Close()
		b, err := io.ReadAll(io.LimitReader(out.Content, maxIMDSBody+1))
		if err == nil && len(b) > maxIMDSBody {
			err = fmt.Errorf("answer over %d bytes", maxIMDSBody)
		}
		return b, err
	}
	role := p.Role
	if role == "" {
		b, err := get("iam/security-credentials/")
		if err != nil {
			return aws.Credentials{}, fmt.Errorf("%w: listing roles: %w (does the instance have an instance profile?)", ErrIMDS, err)
		}
		var roles []string
		sc := bufio.NewScanner(strings.NewReader(string(b)))
		for sc.Scan() {
			if r := strings.TrimSpace(sc.Text()); r != "" {
				roles = append(roles, r)
			}
		}
		if len(roles) != 1 {
			return aws.Credentials{}, fmt.Errorf("%w: IMDS lists %d roles, want exactly one (or name it)", ErrIMDS, len(roles))
		}
		role = roles[0]
	}
	b, err := get("iam/security-credentials/" + role)
	if err != nil {
		return aws.Credentials{}, fmt.Errorf("%w: role %q: %w", ErrIMDS, role, err)
	}
	defer protocol.Zero(b)
	// The document IMDS serves for a role (EC2 User Guide, "Retrieve
	// security credentials from instance metadata").
	var doc struct {
		Code            string
		Message         string
		AccessKeyID     string `json:"AccessKeyId"`
		SecretAccessKey string
		Token           string
		Expiration      time.Time
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return aws.Credentials{}, fmt.Errorf("%w: role %q: the answer is not a credentials document", ErrIMDS, role)
	}
	if doc.Code != "Success" {
		return aws.Credentials{}, fmt.Errorf("%w: role %q: IMDS says %q: %s", ErrIMDS, role, doc.Code, doc.Message)
	}
	if doc.AccessKeyID == "" || doc.SecretAccessKey == "" || doc.Expiration.IsZero() {
		return aws.Credentials{}, fmt.Errorf("%w: role %q: the credentials document lacks a key, secret or expiration", ErrIMDS, role)
	}
	return aws.Credentials{
		AccessKeyID: doc.AccessKeyID, SecretAccessKey: doc.SecretAccessKey, SessionToken: doc.Token,
		Source: "IMDSv2 role " + role, CanExpire: true, Expires: doc.Expiration,
	}, nil
}

// Defaults of CredentialPush.
const (
	// DefaultPushInterval is how often credentials are pushed again, so a
	// restarted enclave (which keeps them in memory only) gets them within
	// one interval, and rotated role credentials arrive long before the
	// old ones expire (IMDS rotates them at least five minutes before).
	DefaultPushInterval = time.Minute
	// minPushRetry is the first retry delay after a failed push.
	minPushRetry = time.Second
)

// CredentialPush configures RunCredentialPush. The zero value is usable
// on EC2.
type CredentialPush struct {
	// Source provides the credentials. Default &IMDSCredentials{}.
	Source aws.CredentialsProvider
	// Interval between pushes. Zero means DefaultPushInterval.
	Interval time.Duration
	// Logger receives one line per push result (access key ID, expiry,
	// errors); never a secret. Default slog.Default().
	Logger *slog.Logger
	// Pushed, when set, is called after every successful push.
	Pushed func(aws.Credentials)
}

// Validate reports whether p is usable.
func (p CredentialPush) Validate() error {
	if p.Interval < 0 {
		return fmt.Errorf("parent: credential push interval %v is negative", p.Interval)
	}
	return nil
}

// RunCredentialPush pushes credentials from p.Source to the enclave at
// once and then every p.Interval until ctx ends; a failed read or push is
// retried after 1 s, doubling up to the interval. It returns nil when ctx
// ends.
func (c *Client) RunCredentialPush(ctx context.Context, p CredentialPush) error {
	return runCredentialPush(ctx, p, c.PushCredentials)
}

func runCredentialPush(ctx context.Context, p CredentialPush, push func(context.Context, aws.Credentials) error) error {
	if err := p.Validate(); err != nil {
		return err
	}
	if p.Source == nil {
		p.Source = &IMDSCredentials{}
	}
	if p.Interval == 0 {
		p.Interval = DefaultPushInterval
	}
	log := p.Logger
	if log == nil {
		log = slog.Default()
	}
	retry := minPushRetry
	var lastKey string
	for {
		wait := p.Interval
		creds, err := p.Source.Retrieve(ctx)
		if err == nil {
			err = push(ctx, creds)
		}
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			log.Warn("credentials push failed", "err", err, "retry_in", retry)
			wait, retry = retry, min(2*retry, p.Interval)
		default:
			retry = minPushRetry
			if creds.AccessKeyID != lastKey {
				log.Info("credentials pushed to the enclave", "access_key_id", creds.AccessKeyID, "expires", creds.Expires.UTC().Format(time.RFC3339), "source", creds.Source)
				lastKey = creds.AccessKeyID
			}
			if p.Pushed != nil {
				p.Pushed(creds)
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}
