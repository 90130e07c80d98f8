package processor

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
)

// NewSQSClient builds the SQS client for cfg. With an endpoint override (ElasticMQ) any
// credentials are accepted, so static dummy ones avoid probing the instance metadata service;
// against real AWS the SDK's default chain (env, shared files, IRSA, instance role) applies.
func NewSQSClient(ctx context.Context, cfg Config) (*sqs.Client, error) {
	if cfg.SQSEndpoint != "" {
		return sqs.New(sqs.Options{
			Region:       cfg.SQSRegion,
			BaseEndpoint: aws.String(cfg.SQSEndpoint),
			Credentials:  credentials.NewStaticCredentialsProvider("x", "x", ""),
		}), nil
	}
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRegion(cfg.SQSRegion))
	if err != nil {
		return nil, fmt.Errorf("aws config: %w", err)
	}
	return sqs.NewFromConfig(awsCfg), nil
}
