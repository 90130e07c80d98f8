package processor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
)

// resolveQueue reads the queue's visibility timeout (which paces lease extensions) and finds
// the dead-letter queue from its redrive policy. Failures only degrade: the SQS default
// visibility is assumed and the DLQ gauge stays absent until a later poll finds the DLQ.
func (p *Processor) resolveQueue(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := p.queue.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl:       aws.String(p.cfg.QueueURL),
		AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameVisibilityTimeout, types.QueueAttributeNameRedrivePolicy},
	})
	if err != nil {
		p.log.Warn("cannot read the queue's attributes; assuming SQS defaults", "err", err,
			"visibility", p.visibility.String())
		return
	}
	if p.cfg.VisibilityTimeout == 0 {
		if s, err := strconv.Atoi(out.Attributes[string(types.QueueAttributeNameVisibilityTimeout)]); err == nil && s > 0 {
			p.visibility = time.Duration(s) * time.Second
		}
	}
	policy, err := parseRedrivePolicy(out.Attributes[string(types.QueueAttributeNameRedrivePolicy)])
	if err != nil {
		// Without a redrive policy a poison message is received forever: say so loudly.
		p.log.Error("queue has no usable redrive policy; poison messages will never reach a DLQ", "err", err)
	} else {
		p.log.Info("queue resolved", "visibility", p.visibility.String(), "dlqArn", policy.arn,
			"maxReceiveCount", policy.maxReceiveCount)
	}
}

// redrivePolicy is the part of a queue's RedrivePolicy attribute we use.
type redrivePolicy struct {
	arn             string
	maxReceiveCount int
}

// parseRedrivePolicy reads {"deadLetterTargetArn": "...", "maxReceiveCount": 5}; the count is
// a string in AWS's answers and a number in ElasticMQ's.
func parseRedrivePolicy(s string) (redrivePolicy, error) {
	if s == "" {
		return redrivePolicy{}, errors.New("RedrivePolicy attribute is empty")
	}
	var raw struct {
		Arn   string          `json:"deadLetterTargetArn"`
		Count json.RawMessage `json:"maxReceiveCount"`
	}
	if err := json.Unmarshal([]byte(s), &raw); err != nil {
		return redrivePolicy{}, fmt.Errorf("RedrivePolicy %q: %w", s, err)
	}
	n, err := strconv.Atoi(strings.Trim(string(raw.Count), `"`))
	if err != nil || raw.Arn == "" {
		return redrivePolicy{}, fmt.Errorf("RedrivePolicy %q lacks deadLetterTargetArn or maxReceiveCount", s)
	}
	return redrivePolicy{arn: raw.Arn, maxReceiveCount: n}, nil
}

// ResolveDLQ returns the dead-letter queue's URL: configured, or found through the queue's
// redrive policy (arn:aws:sqs:REGION:ACCOUNT:NAME → GetQueueUrl).
func ResolveDLQ(ctx context.Context, q Queue, cfg Config) (string, error) {
	if cfg.DLQURL != "" {
		return cfg.DLQURL, nil
	}
	out, err := q.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl:       aws.String(cfg.QueueURL),
		AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameRedrivePolicy},
	})
	if err != nil {
		return "", fmt.Errorf("read redrive policy: %w", err)
	}
	policy, err := parseRedrivePolicy(out.Attributes[string(types.QueueAttributeNameRedrivePolicy)])
	if err != nil {
		return "", fmt.Errorf("%w; set PROCESSOR_DLQ_URL", err)
	}
	parts := strings.Split(policy.arn, ":")
	if len(parts) != 6 || parts[0] != "arn" || parts[2] != "sqs" {
		return "", fmt.Errorf("deadLetterTargetArn %q is not an SQS queue ARN; set PROCESSOR_DLQ_URL", policy.arn)
	}
	in := &sqs.GetQueueUrlInput{QueueName: aws.String(parts[5])}
	if parts[4] != "" {
		in.QueueOwnerAWSAccountId = aws.String(parts[4])
	}
	u, err := q.GetQueueUrl(ctx, in)
	if err != nil {
		return "", fmt.Errorf("look up DLQ %s: %w", parts[5], err)
	}
	return aws.ToString(u.QueueUrl), nil
}

// pollQueueStats exports the depth of the queue and of its DLQ every QueueStatsInterval. A
// growing DLQ is the poison alarm; the queue depth is what autoscaling and the vote-loss
// reconciliation are read against.
func (p *Processor) pollQueueStats(ctx context.Context) {
	dlq := ""
	for {
		qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if visible, inFlight, err := p.depth(qctx, p.cfg.QueueURL); err == nil {
			p.metrics.QueueMessages.WithLabelValues("visible").Set(float64(visible))
			p.metrics.QueueMessages.WithLabelValues("in_flight").Set(float64(inFlight))
		} else if ctx.Err() == nil {
			p.log.Warn("queue depth unavailable", "err", err)
		}
		if dlq == "" {
			var err error
			if dlq, err = ResolveDLQ(qctx, p.queue, p.cfg); err != nil && ctx.Err() == nil {
				p.log.Warn("DLQ unknown; voting_processor_dlq_messages is not exported", "err", err)
			}
		}
		if dlq != "" {
			if visible, inFlight, err := p.depth(qctx, dlq); err == nil {
				p.metrics.DLQMessages.Set(float64(visible + inFlight))
				p.metrics.dlqKnown.Store(true)
			} else if ctx.Err() == nil {
				p.log.Warn("DLQ depth unavailable", "err", err, "dlqUrl", dlq)
			}
		}
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-time.After(p.cfg.QueueStatsInterval):
		}
	}
}

func (p *Processor) depth(ctx context.Context, queueURL string) (visible, inFlight int, err error) {
	return approxDepth(ctx, p.queue, queueURL)
}

func approxDepth(ctx context.Context, q Queue, queueURL string) (visible, inFlight int, err error) {
	out, err := q.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl: aws.String(queueURL),
		AttributeNames: []types.QueueAttributeName{types.QueueAttributeNameApproximateNumberOfMessages,
			types.QueueAttributeNameApproximateNumberOfMessagesNotVisible},
	})
	if err != nil {
		return 0, 0, err
	}
	visible, _ = strconv.Atoi(out.Attributes[string(types.QueueAttributeNameApproximateNumberOfMessages)])
	inFlight, _ = strconv.Atoi(out.Attributes[string(types.QueueAttributeNameApproximateNumberOfMessagesNotVisible)])
	return visible, inFlight, nil
}
