package enqueue

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/tvvote/voting/filters/votefilter/edgeconfig"
)

// NewSQSClient builds the SQS client the edge sends votes with: AWS's default credentials, or
// fixed dummy ones for ElasticMQ; a connection pool sized for hundreds of batches in flight.
func NewSQSClient(cfg edgeconfig.SQSConfig) (*sqs.Client, error) {
	httpClient := &http.Client{Transport: &http.Transport{
		DialContext:         (&net.Dialer{Timeout: time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        512,
		MaxIdleConnsPerHost: 512,
		IdleConnTimeout:     90 * time.Second,
	}}
	var awsCfg aws.Config
	if cfg.StaticCredentials {
		awsCfg = aws.Config{
			Region:      cfg.Region,
			Credentials: credentials.NewStaticCredentialsProvider("local", "local", ""),
		}
	} else {
		var err error
		awsCfg, err = awsconfig.LoadDefaultConfig(context.Background(), awsconfig.WithRegion(cfg.Region))
		if err != nil {
			return nil, fmt.Errorf("aws config: %w", err)
		}
	}
	awsCfg.HTTPClient = httpClient
	// The batcher retries failed entries itself, within each vote's deadline, and must see
	// every attempt's error: the SDK would report only the last one, and a refused connection
	// on a retry would hide that the first attempt may have reached SQS.
	awsCfg.RetryMaxAttempts = 1
	return sqs.NewFromConfig(awsCfg, func(o *sqs.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
	}), nil
}
