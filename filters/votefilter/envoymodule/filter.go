// Package envoymodule is the thin adapter between Envoy's dynamic-module Go SDK and the
// admission logic in package votefilter. Importing it registers the "votefilter" HTTP filter.
package envoymodule

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	sdk "github.com/envoyproxy/envoy/source/extensions/dynamic_modules/sdk/go"
	"github.com/envoyproxy/envoy/source/extensions/dynamic_modules/sdk/go/shared"

	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/filters/votefilter"
	"github.com/tvvote/voting/filters/votefilter/dedup"
	"github.com/tvvote/voting/filters/votefilter/enqueue"
	"github.com/tvvote/voting/filters/votefilter/token"
)

func init() {
	sdk.RegisterHttpFilterConfigFactories(map[string]shared.HttpFilterConfigFactory{
		votefilter.FilterName: &configFactory{},
	})
}

// VotePath is the one path the filter answers itself; everything else passes through.
const VotePath = "/api/v1/votes"

var log = slog.New(slog.NewJSONHandler(os.Stderr, nil)).With("component", "votefilter")

type configFactory struct {
	shared.EmptyHttpFilterConfigFactory
}

// Create runs on Envoy's main thread for every config push: it parses, validates and wires
// the admission logic. A bad config is refused here, so Envoy NACKs it and keeps the old one.
func (configFactory) Create(h shared.HttpFilterConfigHandle, raw []byte) (shared.HttpFilterFactory, error) {
	cfg, err := votefilter.Parse(raw)
	if err != nil {
		h.Log(shared.LogLevelError, "votefilter: rejected config: %v", err)
		return nil, err
	}
	q, err := sqsClient(cfg.SQS)
	if err != nil {
		return nil, err
	}
	verifier := token.NewVerifier(jwks(cfg.JWT.JWKSURL), cfg.JWT.Issuer, cfg.JWT.Audience,
		time.Duration(cfg.JWT.LeewaySeconds)*time.Second)
	adm := votefilter.NewAdmitter(cfg, verifier,
		dedup.NewRedis(redisClient(cfg.Redis.Addr), time.Duration(cfg.Redis.DedupTTLSeconds)*time.Second),
		enqueue.NewSQS(q, cfg.SQS.QueueURL))
	adm.Log = log
	h.Log(shared.LogLevelInfo, "votefilter: config loaded: region=%s elections=%d", cfg.Region, len(cfg.Elections))
	return &filterFactory{adm: adm, maxBody: cfg.MaxBodyBytes}, nil
}

type filterFactory struct {
	shared.EmptyHttpFilterFactory
	adm     *votefilter.Admitter
	maxBody int
}

func (f *filterFactory) Create(h shared.HttpFilterHandle) shared.HttpFilter {
	return &filter{h: h, f: f}
}

// filter handles one stream. Envoy calls it on one worker thread only.
type filter struct {
	shared.EmptyHttpFilter
	h      shared.HttpFilterHandle
	f      *filterFactory
	active bool
	done   bool
	req    votefilter.Request
	body   []byte
}

func (p *filter) OnRequestHeaders(headers shared.HeaderMap, endOfStream bool) shared.HeadersStatus {
	path := headers.GetOne(":path").ToUnsafeString()
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	if path != VotePath {
		return shared.HeadersStatusContinue
	}
	p.active = true
	p.req = votefilter.Request{
		Authorization: headers.GetOne("authorization").ToString(),
		ContentType:   headers.GetOne("content-type").ToString(),
		RequestID:     headers.GetOne("x-request-id").ToString(),
	}
	if m := headers.GetOne(":method").ToUnsafeString(); m != http.MethodPost {
		r := votefilter.ErrorReply(&votefilter.Rejection{Code: contract.CodeMethodNotAllowed,
			Message: "only POST is allowed on " + VotePath}, p.req.RequestID)
		r.Headers = append(r.Headers, [2]string{"allow", http.MethodPost})
		p.reply(r)
		return shared.HeadersStatusStop
	}
	if endOfStream {
		p.dispatch()
	}
	return shared.HeadersStatusStop
}

func (p *filter) OnRequestBody(body shared.BodyBuffer, endOfStream bool) shared.BodyStatus {
	if !p.active {
		return shared.BodyStatusContinue
	}
	if p.done {
		return shared.BodyStatusStopNoBuffer
	}
	// The filter keeps its own copy of the body, so Envoy need not buffer it.
	for _, chunk := range body.GetChunks() {
		p.body = append(p.body, chunk.ToUnsafeBytes()...)
	}
	if len(p.body) > p.f.maxBody {
		p.reply(votefilter.ErrorReply(&votefilter.Rejection{Code: contract.CodePayloadTooLarge,
			Message: "vote body too large"}, p.req.RequestID))
		return shared.BodyStatusStopNoBuffer
	}
	if endOfStream {
		p.dispatch()
	}
	return shared.BodyStatusStopNoBuffer
}

func (p *filter) OnRequestTrailers(shared.HeaderMap) shared.TrailersStatus {
	if !p.active {
		return shared.TrailersStatusContinue
	}
	if !p.done {
		p.dispatch()
	}
	return shared.TrailersStatusStop
}

// dispatch hands the vote to a goroutine: JWT verification, Redis and SQS never run on the
// Envoy worker thread. The answer comes back through the stream's scheduler.
func (p *filter) dispatch() {
	p.done = true
	p.req.Body = p.body
	sched := p.h.GetScheduler()
	adm, req, h := p.f.adm, p.req, p.h
	go func() {
		resp := adm.Admit(context.Background(), req)
		sched.Schedule(func() {
			h.SendLocalResponse(uint32(resp.Status), resp.Headers, resp.Body, "votefilter")
		})
	}()
}

func (p *filter) reply(r votefilter.Response) {
	p.done = true
	p.h.SendLocalResponse(uint32(r.Status), r.Headers, r.Body, "votefilter")
}
