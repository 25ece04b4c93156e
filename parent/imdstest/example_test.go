package imdstest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"

	"github.com/enclavekit/enclavekit/parent/imdstest"
)

// The SDK's IMDS client reads the instance role's credentials and the
// region from the emulator, as the parent does on EC2.
func Example() {
	s, err := imdstest.New(imdstest.Options{Role: "enclave-instance", Region: "eu-west-1"})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	c := imds.New(imds.Options{Endpoint: s.URL(), EnableFallback: aws.FalseTernary})
	ctx := context.Background()

	out, err := c.GetMetadata(ctx, &imds.GetMetadataInput{Path: "iam/security-credentials/enclave-instance"})
	if err != nil {
		log.Fatal(err)
	}
	defer out.Content.Close()
	var creds struct{ Code, Type, AccessKeyId string }
	if err := json.NewDecoder(out.Content).Decode(&creds); err != nil {
		log.Fatal(err)
	}
	region, err := c.GetRegion(ctx, &imds.GetRegionInput{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(creds.Code, creds.Type, creds.AccessKeyId == s.Credentials().AccessKeyID, region.Region)
	// Output: Success AWS-HMAC true eu-west-1
}
