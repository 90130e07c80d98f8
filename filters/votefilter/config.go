// Package votefilter is the vote admission logic of the Envoy edge: JWT check, contract
// validation, election window, one-vote dedup in Redis and the acknowledged SQS enqueue.
// It is plain Go; the Envoy SDK adapter lives in filters/votefilter/envoymodule.
package votefilter

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// FilterName is the name the filter is registered under in the dynamic module.
const FilterName = "votefilter"

// Config is the filter's configuration, delivered by the control plane as JSON in the
// dynamic_modules filter_config. Every field is validated by Parse.
type Config struct {
	// Region names the Envoy fleet; it is stamped on every queued vote.
	Region string `json:"region"`
	// JWT says how viewer tokens are verified.
	JWT JWTConfig `json:"jwt"`
	// Redis is the dedup store.
	Redis RedisConfig `json:"redis"`
	// SQS is the vote queue.
	SQS SQSConfig `json:"sqs"`
	// Elections are the elections this edge knows, with their candidates and windows.
	Elections []Election `json:"elections"`
	// EnqueueTimeoutMs bounds the Redis + SQS work of one vote; on expiry the viewer gets 503.
	EnqueueTimeoutMs int `json:"enqueueTimeoutMs"`
	// MaxBodyBytes rejects larger vote bodies with 413 before they are parsed.
	MaxBodyBytes int `json:"maxBodyBytes"`
}

// JWTConfig points at the identity provider (an Auth0 tenant in production).
type JWTConfig struct {
	// Issuer must equal the token's iss claim, e.g. "https://tenant.eu.auth0.com/".
	Issuer string `json:"issuer"`
	// Audience must be one of the token's aud values (the Auth0 API identifier).
	Audience string `json:"audience"`
	// JWKSURL serves the issuer's signing keys.
	JWKSURL string `json:"jwksUrl"`
	// LeewaySeconds tolerates clock skew on exp and nbf.
	LeewaySeconds int `json:"leewaySeconds"`
}

// RedisConfig locates the dedup store.
type RedisConfig struct {
	// Addr is host:port of the Redis server.
	Addr string `json:"addr"`
	// DedupTTLSeconds is how long a vote's dedup key lives; it must outlast the election.
	DedupTTLSeconds int `json:"dedupTtlSeconds"`
}

// SQSConfig locates the vote queue.
type SQSConfig struct {
	// QueueURL is the votes queue.
	QueueURL string `json:"queueUrl"`
	// Region is the AWS region of the queue.
	Region string `json:"region"`
	// Endpoint overrides the SQS endpoint (ElasticMQ locally); empty means AWS.
	Endpoint string `json:"endpoint,omitempty"`
	// StaticCredentials uses fixed dummy credentials, for ElasticMQ only.
	StaticCredentials bool `json:"staticCredentials,omitempty"`
}

// Election is what the edge needs to know of one election.
type Election struct {
	// ID is the election uuid.
	ID string `json:"id"`
	// Status is the election's state (DRAFT, SCHEDULED, ACTIVE, CLOSED, CANCELLED).
	Status string `json:"status"`
	// StartDate and EndDate bound the voting window; the edge checks them itself so a slow
	// config push cannot keep a window open.
	StartDate time.Time `json:"startDate"`
	EndDate   time.Time `json:"endDate"`
	// CandidateIDs are the candidates one may vote for.
	CandidateIDs []string `json:"candidateIds"`
}

// Parse decodes and validates a JSON configuration and fills defaults.
func Parse(raw []byte) (*Config, error) {
	var c Config
	dec := json.NewDecoder(bytesReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("votefilter config: %w", err)
	}
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("votefilter config: %w", err)
	}
	return &c, nil
}

func (c *Config) validate() error {
	var errs []error
	if c.Region == "" {
		errs = append(errs, errors.New("region is required"))
	}
	if c.JWT.Issuer == "" || c.JWT.Audience == "" || c.JWT.JWKSURL == "" {
		errs = append(errs, errors.New("jwt.issuer, jwt.audience and jwt.jwksUrl are required"))
	}
	if c.Redis.Addr == "" {
		errs = append(errs, errors.New("redis.addr is required"))
	}
	if c.SQS.QueueURL == "" || c.SQS.Region == "" {
		errs = append(errs, errors.New("sqs.queueUrl and sqs.region are required"))
	}
	for i, e := range c.Elections {
		if !isUUID(e.ID) {
			errs = append(errs, fmt.Errorf("elections[%d].id %q is not a uuid", i, e.ID))
		}
		if !e.EndDate.After(e.StartDate) {
			errs = append(errs, fmt.Errorf("elections[%d]: endDate must be after startDate", i))
		}
	}
	if c.EnqueueTimeoutMs == 0 {
		c.EnqueueTimeoutMs = 2000
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 4096
	}
	if c.Redis.DedupTTLSeconds == 0 {
		c.Redis.DedupTTLSeconds = 7 * 24 * 3600
	}
	if c.JWT.LeewaySeconds == 0 {
		c.JWT.LeewaySeconds = 30
	}
	return errors.Join(errs...)
}
