package supervisor

import (
	"context"
	"log/slog"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"

	"github.com/enclavekit/enclavekit/parent"
)

// pushCredentials pushes role credentials from src into the enclave at
// addr until ctx ends: it dials until the enclave answers (it may not be
// running yet, or be restarting), then runs parent.RunCredentialPush,
// whose client dials again after a restart. A restarted enclave, which
// holds credentials in memory only, has them again within one interval.
func pushCredentials(ctx context.Context, addr string, src aws.CredentialsProvider, interval time.Duration, log *slog.Logger) {
	wait := time.Second
	for {
		c, err := parent.Dial(ctx, addr, parent.Options{PoolSize: 1, Logger: slog.New(slog.DiscardHandler)})
		if err == nil {
			_ = c.RunCredentialPush(ctx, parent.CredentialPush{Source: src, Interval: interval, Logger: log})
			c.Close()
			return
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(2*wait, interval)
	}
}

// credentialSource is the IMDSv2 provider the config describes.
func credentialSource(c *Credentials) aws.CredentialsProvider {
	return &parent.IMDSCredentials{Role: c.Role, Client: imds.New(imds.Options{Endpoint: c.IMDSEndpoint})}
}
