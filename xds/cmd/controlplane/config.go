package main

import (
	"time"

	"github.com/tvvote/voting/filters/votefilter/edgeconfig"
	"github.com/tvvote/voting/xds/snapshot"
	"github.com/tvvote/voting/xds/xdsconfig"
)

// loadConfig reads the control plane's configuration (xdsconfig) through getenv, where an
// empty value is an unset variable.
func loadConfig(getenv func(string) string) (xdsconfig.Config, error) {
	return xdsconfig.Load(lookupOf(getenv))
}

// lookupOf turns a getenv into the lookup the config packages take.
func lookupOf(getenv func(string) string) func(string) (string, bool) {
	return func(name string) (string, bool) {
		v := getenv(name)
		return v, v != ""
	}
}

// snapshotSettings is the node-independent part of every snapshot.
func snapshotSettings(c xdsconfig.Config) snapshot.Settings {
	s := snapshot.Settings{
		ListenerAddress: c.ListenerAddress,
		ListenerPort:    c.ListenerPort,
		ResultsAddr:     c.ResultsAddr,
		StatusAddr:      c.StatusAddr,
		AdminAddr:       c.AdminUpstreamAddr,
		UpstreamTimeout: c.UpstreamTimeout,
		TrustedHops:     c.TrustedHops,
		ProxyProtocol:   c.ProxyProtocol,
		Tracing:         snapshot.Tracing{CollectorAddr: c.Tracing.OTLPAddr, SamplingPercent: c.Tracing.Sampling},
		Regions:         c.RegionStores,
		Filter: edgeconfig.Config{
			JWT: edgeconfig.JWTConfig{Issuer: c.JWTIssuer, Audience: c.JWTAudience, JWKSURL: c.JWKSURL,
				HomeRegionClaim: c.JWTHomeRegionClaim},
			Redis: edgeconfig.RedisConfig{Addr: c.RedisAddr, Cluster: c.RedisCluster, TLS: c.RedisTLS, AuthTokenFile: c.RedisAuthFile,
				WaitReplicas: c.RedisWaitReplicas, WaitTimeoutMs: int(c.RedisWaitTimeout / time.Millisecond)},
			Limits: edgeconfig.Limits{PerViewer: c.PerViewer, PerIP: c.PerIP},
			Captcha: edgeconfig.CaptchaConfig{
				Mode: c.CaptchaMode,
				PoW:  edgeconfig.PoWConfig{SecretFile: c.PoWSecretFile, Difficulty: c.PoWDifficulty},
			},
			SQS: edgeconfig.SQSConfig{
				QueueURL:          c.SQSQueueURL,
				Region:            c.SQSRegion,
				Endpoint:          c.SQSEndpoint,
				StaticCredentials: c.SQSStaticCredentials,
			},
		},
	}
	if sv := c.Siteverify; sv.Addr != "" {
		s.Siteverify = snapshot.SiteverifyUpstream{Addr: sv.Addr, TLS: sv.TLS, SNI: sv.Host, CAFile: sv.CAFile}
		s.Filter.Captcha.Siteverify = edgeconfig.SiteverifyConfig{Cluster: snapshot.SiteverifyCluster, Host: sv.Host,
			Path: sv.Path, SecretFile: sv.SecretFile, MinScore: sv.MinScore, TimeoutMs: sv.TimeoutMs}
	}
	return s
}
