package processor

import (
	"context"
	"fmt"
	"net/http"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
)

// NewSQSClient builds the SQS client for cfg. With an endpoint override (ElasticMQ) any
// credentials are accepted, so static dummy ones avoid probing the instance metadata service;
// against real AWS the SDK's default chain (env, shared files, IRSA, instance role) applies.
func NewSQSClient(ctx context.Context, cfg Config) (*sqs.Client, error) {
	httpClient := newHTTPClient(cfg)
	if cfg.SQSEndpoint != "" {
		return sqs.New(sqs.Options{
			Region:       cfg.SQSRegion,
			BaseEndpoint: aws.String(cfg.SQSEndpoint),
			Credentials:  credentials.NewStaticCredentialsProvider("x", "x", ""),
			HTTPClient:   httpClient,
		}), nil
	}
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRegion(cfg.SQSRegion), awsconfig.WithHTTPClient(httpClient))
	if err != nil {
		return nil, fmt.Errorf("aws config: %w", err)
	}
	return sqs.NewFromConfig(awsCfg), nil
}

// newHTTPClient keeps one idle connection per concurrent caller. The SDK's default keeps 10 per
// host; with more receivers and deleters than that, every call beyond ten would open (and TLS
// handshake) a new connection and close it again.
func newHTTPClient(cfg Config) *awshttp.BuildableClient {
	conns := max(cfg.Receivers+cfg.Deleters+4, 16)
	return awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
		tr.MaxIdleConns = conns
		tr.MaxIdleConnsPerHost = conns
	})
}
