// Package envoymodule is the thin adapter between Envoy's dynamic-module Go SDK and the
// admission logic in package votefilter. Importing it registers the "votefilter" HTTP filter.
package envoymodule

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	sdk "github.com/envoyproxy/envoy/source/extensions/dynamic_modules/sdk/go"
	"github.com/envoyproxy/envoy/source/extensions/dynamic_modules/sdk/go/shared"

	"github.com/tvvote/voting/contract"
	"github.com/tvvote/voting/filters/votefilter"
	"github.com/tvvote/voting/filters/votefilter/captcha"
	"github.com/tvvote/voting/filters/votefilter/edgeconfig"
	"github.com/tvvote/voting/filters/votefilter/edgeruntime"
	"github.com/tvvote/voting/filters/votefilter/secretfile"
)

func init() {
	sdk.RegisterHttpFilterConfigFactories(map[string]shared.HttpFilterConfigFactory{
		edgeconfig.FilterName: &configFactory{},
	})
}

var log = slog.New(slog.NewJSONHandler(os.Stderr, nil)).With("component", "votefilter")

type configFactory struct {
	shared.EmptyHttpFilterConfigFactory
}

// Create runs on Envoy's main thread for every config push: it parses, validates and wires
// the admission logic. A bad config is refused here, so Envoy NACKs it and keeps the old one.
// Each push builds a new immutable Admitter, so no request ever sees half of a config.
func (configFactory) Create(h shared.HttpFilterConfigHandle, raw []byte) (shared.HttpFilterFactory, error) {
	cfg, err := edgeconfig.Parse(raw)
	if err != nil {
		h.Log(shared.LogLevelError, "votefilter: rejected config: %v", err)
		return nil, err
	}
	built, err := edgeruntime.Build(cfg, log, reportBatch)
	if err != nil {
		h.Log(shared.LogLevelError, "votefilter: rejected config: %v", err)
		return nil, err
	}
	adm := built.Admitter
	if cfg.Captcha.Mode == edgeconfig.CaptchaOff {
		h.Log(shared.LogLevelCritical, "votefilter: CAPTCHA IS OFF — bots are not kept out; load tests only")
		log.Warn("CAPTCHA IS OFF: bots are not kept out; use only for load tests", "version", cfg.Version)
	}
	h.Log(shared.LogLevelInfo, "votefilter: config loaded: version=%s region=%s peer regions=%d elections=%d captcha=%s",
		cfg.Version, cfg.Region, len(cfg.PeerRegions), len(cfg.Elections), cfg.Captcha.Mode)
	return &filterFactory{adm: adm, maxBody: cfg.MaxBodyBytes, stats: defineStats(h), siteSecret: built.SiteSecret}, nil
}

type filterFactory struct {
	shared.EmptyHttpFilterFactory
	adm     *votefilter.Admitter
	maxBody int
	stats   stats
	// siteSecret is the siteverify site secret, in siteverify mode.
	siteSecret *secretfile.File
}

func (f *filterFactory) Create(h shared.HttpFilterHandle) shared.HttpFilter {
	return &filter{h: h, f: f}
}

// route is what the filter does with a stream.
type route int

const (
	passThrough route = iota
	voteRoute
	statusRoute
	adminRoute
)

// filter handles one stream. Envoy calls it on one worker thread only; the goroutines it
// starts hand their results back through the stream's scheduler.
type filter struct {
	shared.EmptyHttpFilter
	h     shared.HttpFilterHandle
	f     *filterFactory
	route route
	done  bool
	// admitted: an admin request passed the token check and now flows on to the upstream.
	admitted bool
	started  time.Time
	req      votefilter.Request
	body     []byte
}

func (p *filter) OnRequestHeaders(headers shared.HeaderMap, endOfStream bool) shared.HeadersStatus {
	path := headers.GetOne(":path").ToUnsafeString()
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	method := headers.GetOne(":method").ToUnsafeString()
	switch {
	case path == contract.PathVotes:
		p.route = voteRoute
	case path == contract.PathVoteChallenge:
		p.capture(headers)
		if method != http.MethodGet {
			p.reply(methodNotAllowed(http.MethodGet, p.req.RequestID))
			return shared.HeadersStatusStop
		}
		p.reply(p.f.adm.Challenge(p.req.RequestID))
		return shared.HeadersStatusStop
	case strings.HasPrefix(path, contract.PathVoteStatus):
		p.route = statusRoute
	case strings.HasPrefix(path, contract.PathAdmin):
		p.route = adminRoute
	default:
		return shared.HeadersStatusContinue
	}
	p.capture(headers)
	switch p.route {
	case voteRoute:
		if method != http.MethodPost {
			p.reply(methodNotAllowed(http.MethodPost, p.req.RequestID))
			return shared.HeadersStatusStop
		}
		if endOfStream {
			p.dispatchVote()
		}
		return shared.HeadersStatusStop
	case statusRoute:
		if method != http.MethodGet {
			p.reply(methodNotAllowed(http.MethodGet, p.req.RequestID))
			return shared.HeadersStatusStop
		}
		p.dispatchStatus(path)
		return shared.HeadersStatusStop
	default: // adminRoute: hold the whole request until the token is checked
		p.dispatchAdmin()
		return shared.HeadersStatusStopAllAndBuffer
	}
}

func (p *filter) capture(headers shared.HeaderMap) {
	p.started = time.Now()
	p.req = votefilter.Request{
		Authorization: headers.GetOne("authorization").ToString(),
		ContentType:   headers.GetOne("content-type").ToString(),
		RequestID:     headers.GetOne("x-request-id").ToString(),
	}
	if t := p.f.adm.Config().Tracing; t != nil && p.route == voteRoute {
		p.req.TraceParent = traceParent(p.h, sampled(t.SamplingPercent))
	}
}

func (p *filter) OnRequestBody(body shared.BodyBuffer, endOfStream bool) shared.BodyStatus {
	switch p.route {
	case voteRoute:
	case adminRoute:
		if p.admitted {
			return shared.BodyStatusContinue
		}
		return shared.BodyStatusStopAndBuffer
	default:
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
		p.dispatchVote()
	}
	return shared.BodyStatusStopNoBuffer
}

func (p *filter) OnRequestTrailers(shared.HeaderMap) shared.TrailersStatus {
	switch p.route {
	case voteRoute:
		if !p.done {
			p.dispatchVote()
		}
		return shared.TrailersStatusStop
	case adminRoute:
		if p.admitted {
			return shared.TrailersStatusContinue
		}
		return shared.TrailersStatusStop
	}
	return shared.TrailersStatusContinue
}

// dispatchVote hands the vote to a goroutine: JWT verification, Redis and SQS never run on
// the Envoy worker thread. The answer comes back through the stream's scheduler.
func (p *filter) dispatchVote() {
	p.done = true
	p.req.Body = p.body
	p.req.ClientIP = p.clientIP()
	sched := p.h.GetScheduler()
	adm, req := p.f.adm, p.req
	async(func() {
		b, rej := adm.Check(context.Background(), req)
		switch {
		case rej != nil:
			p.replyOn(sched, votefilter.ErrorReply(rej, req.RequestID))
		case b.NeedsSiteverify:
			sched.Schedule(func() { p.siteverify(b) })
		default:
			p.replyOn(sched, adm.Commit(context.Background(), b))
		}
	})
}

// siteverify asks the captcha service through Envoy's own HTTP client (a cluster from xDS),
// on the worker thread as the SDK requires; the commit then goes back to a goroutine.
func (p *filter) siteverify(b *votefilter.Ballot) {
	sv := p.f.adm.Config().Captcha.Siteverify
	headers := [][2]string{{":method", http.MethodPost}, {":path", sv.Path}, {":authority", sv.Host},
		{"content-type", "application/x-www-form-urlencoded"}}
	form := captcha.SiteverifyRequest(string(p.f.siteSecret.Current()), b.Captcha, b.ClientIP)
	res, _ := p.h.HttpCallout(sv.Cluster, headers, form,
		uint64(sv.TimeoutMs), calloutFunc(func(status int, body []byte, ok bool) {
			err := captcha.ErrFailed
			if ok {
				err = captcha.CheckSiteverify(status, body, sv.MinScore)
			} else {
				err = context.DeadlineExceeded
			}
			if err != nil {
				p.f.adm.Log.Info(votefilter.EventCaptchaFailed, "requestId", p.req.RequestID, "electionId", b.Vote.ElectionID,
					"reason", "siteverify", "err", err)
				p.reply(votefilter.CaptchaRejected(err, p.req.RequestID))
				return
			}
			sched := p.h.GetScheduler()
			go func() { p.replyOn(sched, p.f.adm.Commit(context.Background(), b)) }()
		}))
	if res != shared.HttpCalloutInitSuccess {
		log.Error("siteverify callout not started", "cluster", sv.Cluster, "result", int(res))
		p.reply(votefilter.CaptchaRejected(context.Canceled, p.req.RequestID))
	}
}

func (p *filter) dispatchStatus(path string) {
	p.done = true
	sched := p.h.GetScheduler()
	adm, q := p.f.adm, votefilter.StatusQuery{Authorization: p.req.Authorization, RequestID: p.req.RequestID, Path: path}
	go func() {
		l, rej := adm.CheckStatus(context.Background(), q)
		if rej != nil {
			p.replyOn(sched, votefilter.ErrorReply(rej, q.RequestID))
			return
		}
		resp, fallback := adm.Status(context.Background(), l, q.RequestID)
		if !fallback {
			p.replyOn(sched, resp)
			return
		}
		sched.Schedule(func() { p.statusFromService(l) })
	}()
}

// statusFromService asks the status service (PostgreSQL behind it) when Redis had no key.
func (p *filter) statusFromService(l *votefilter.StatusLookup) {
	cluster := p.f.adm.Config().StatusCluster
	headers := [][2]string{{":method", http.MethodGet}, {":path", votefilter.StatusServicePath(l)},
		{":authority", cluster}, {"x-request-id", p.req.RequestID}}
	res, _ := p.h.HttpCallout(cluster, headers, nil, 1000, calloutFunc(func(status int, body []byte, ok bool) {
		if !ok {
			status = 0
		}
		p.reply(votefilter.StatusFromService(l, status, body, p.req.RequestID))
	}))
	if res != shared.HttpCalloutInitSuccess {
		p.reply(votefilter.StatusFromService(l, 0, nil, p.req.RequestID))
	}
}

func (p *filter) dispatchAdmin() {
	p.done = true
	sched := p.h.GetScheduler()
	adm, req := p.f.adm, p.req
	go func() {
		deny := adm.AuthorizeAdmin(context.Background(), req.Authorization, req.RequestID)
		sched.Schedule(func() {
			if deny != nil {
				p.reply(*deny)
				return
			}
			p.f.stats.record(p.h, votefilter.Response{Outcome: votefilter.OutcomeAnswered, Reason: "admin"}, time.Since(p.started))
			// Envoy replays the buffered body through OnRequestBody after this; it must pass.
			p.admitted = true
			p.h.ContinueRequest()
		})
	}()
}

// replyOn sends r from the stream's worker thread.
func (p *filter) replyOn(sched shared.Scheduler, r votefilter.Response) {
	sched.Schedule(func() { p.reply(r) })
}

// reply must run on the stream's worker thread.
func (p *filter) reply(r votefilter.Response) {
	p.done = true
	p.f.stats.record(p.h, r, time.Since(p.started))
	p.h.SendLocalResponse(uint32(r.Status), r.Headers, r.Body, edgeconfig.LocalReplyDetails)
}

// clientIP is the client address Envoy computed: the connection's peer (from the PROXY header
// when the listener requires one), or the X-Forwarded-For entry the listener's trusted hops
// name. The control plane configures the listener so that a client cannot choose it.
func (p *filter) clientIP() string {
	v, ok := p.h.GetAttributeString(shared.AttributeIDSourceAddress)
	if !ok {
		return "unknown"
	}
	addr := v.ToString()
	if host, _, err := net.SplitHostPort(addr); err == nil {
		return host
	}
	return addr
}

func methodNotAllowed(allow, requestID string) votefilter.Response {
	r := votefilter.ErrorReply(&votefilter.Rejection{Code: contract.CodeMethodNotAllowed,
		Message: "only " + allow + " is allowed here"}, requestID)
	r.Headers = append(r.Headers, [2]string{"allow", allow})
	return r
}

// calloutFunc adapts a function to the SDK's callout callback, reading the :status header.
type calloutFunc func(status int, body []byte, ok bool)

func (f calloutFunc) OnHttpCalloutDone(_ uint64, result shared.HttpCalloutResult, headers [][2]shared.UnsafeEnvoyBuffer,
	body []shared.UnsafeEnvoyBuffer) {
	if result != shared.HttpCalloutSuccess {
		f(0, nil, false)
		return
	}
	status := 0
	for _, h := range headers {
		if h[0].ToUnsafeString() == ":status" {
			status, _ = strconv.Atoi(h[1].ToUnsafeString())
		}
	}
	var b []byte
	for _, c := range body {
		b = append(b, c.ToBytes()...)
	}
	f(status, b, true)
}
