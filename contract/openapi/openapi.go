// Package openapi holds the project's OpenAPI documents (vote-service.yaml and
// results-service.yaml beside this file, which extend the shared contracts) and checks HTTP
// answers against them and against the shared contracts in ../shared/contracts beside the
// repository, so that a test fails on any answer the contracts do not allow.
//
// An answer is checked against both. The shared contract checks the body of every status it
// documents; the project's document, where it has the operation, must also document the status.
// An operation the project's document marks x-deviates-from-seed is checked against that
// document alone.
package openapi

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
)

// Files are the project's documents, named like the shared contracts they extend.
var Files = []string{"vote-service.yaml", "results-service.yaml"}

//go:embed vote-service.yaml results-service.yaml
var files embed.FS

// The shared contracts, as this repository pins them (a test keeps the copy equal to
// SharedDir whenever the repository sits beside it), so the checks run from any clone.
//
//go:embed shared/vote-service.yaml shared/results-service.yaml
var sharedFiles embed.FS

// SharedDir is where the shared contracts are published, relative to the repository root.
const SharedDir = "../shared/contracts"

// deviationKey marks an operation of a project document that departs from the shared contract.
const deviationKey = "x-deviates-from-seed"

// Formats the documents use that kin-openapi does not check by default. Vote ids are UUIDv7,
// so the RFC 9562 form.
var formats = openapi3.WithStringFormatValidators(map[string]openapi3.StringFormatValidator{
	"uuid": openapi3.NewRegexpFormatValidator(openapi3.FormatOfStringForUUIDOfRFC9562),
})

type document struct {
	name   string
	router routers.Router
	// project: a document of this repository, which documents every status it answers.
	project bool
}

// Contracts are the shared contracts and the project's documents, ready to check answers.
type Contracts struct {
	shared, project []document
}

// Load reads the shared contracts as pinned in this repository, and the project's documents.
func Load() (*Contracts, error) {
	return load(func(name string) ([]byte, error) { return sharedFiles.ReadFile("shared/" + name) })
}

var loadOnce = sync.OnceValues(Load)

// Shared is Load, done once per process.
func Shared() (*Contracts, error) { return loadOnce() }

// LoadFrom reads the shared contracts from dir and the project's documents.
func LoadFrom(dir string) (*Contracts, error) {
	return load(func(name string) ([]byte, error) {
		path := filepath.Join(dir, name)
		b, err := os.ReadFile(path)
		if err != nil {
			abs, _ := filepath.Abs(path)
			return nil, fmt.Errorf("shared contract %s: %w", abs, err)
		}
		return b, nil
	})
}

func load(shared func(name string) ([]byte, error)) (*Contracts, error) {
	c := &Contracts{}
	for _, name := range Files {
		b, err := shared(name)
		if err != nil {
			return nil, err
		}
		d, err := newDocument("shared/contracts/"+name, b, false)
		if err != nil {
			return nil, err
		}
		c.shared = append(c.shared, d)
		b, err = files.ReadFile(name)
		if err != nil {
			return nil, err
		}
		if d, err = newDocument("contract/openapi/"+name, b, true); err != nil {
			return nil, err
		}
		c.project = append(c.project, d)
	}
	return c, nil
}

// validate checks the project's documents themselves: valid OpenAPI, examples included.
func validate() error {
	var errs []error
	for _, name := range Files {
		b, err := files.ReadFile(name)
		if err != nil {
			return err
		}
		doc, err := openapi3.NewLoader().LoadFromData(b)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			continue
		}
		if err := doc.Validate(context.Background(), openapi3.EnableExamplesValidation()); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

func newDocument(name string, b []byte, project bool) (document, error) {
	doc, err := openapi3.NewLoader().LoadFromData(b)
	if err != nil {
		return document{}, fmt.Errorf("%s: %w", name, err)
	}
	// Answers are checked wherever the stack runs, not only at the documents' servers.
	doc.Servers = nil
	for _, item := range doc.Paths.Map() {
		item.Servers = nil
	}
	r, err := gorillamux.NewRouter(doc)
	if err != nil {
		return document{}, fmt.Errorf("%s: %w", name, err)
	}
	return document{name: name, router: r, project: project}, nil
}

// Check returns why an answer to req violates the contracts, or nil. Paths no contract
// describes (metrics, page assets, the control plane's edge settings) are not checked.
func (c *Contracts) Check(req *http.Request, status int, header http.Header, body []byte) error {
	var errs []error
	deviates := false
	for _, d := range c.project {
		route, params, err := d.router.FindRoute(req)
		if err != nil {
			continue
		}
		if _, ok := route.Operation.Extensions[deviationKey]; ok {
			deviates = true
		}
		errs = append(errs, d.check(req, route, params, status, header, body))
	}
	if !deviates {
		for _, d := range c.shared {
			if route, params, err := d.router.FindRoute(req); err == nil {
				errs = append(errs, d.check(req, route, params, status, header, body))
			}
		}
	}
	return errors.Join(errs...)
}

func (d document) check(req *http.Request, route *routers.Route, params map[string]string, status int, header http.Header, body []byte) error {
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route},
		Status:                 status,
		Header:                 header,
		Body:                   io.NopCloser(bytes.NewReader(body)),
		Options: &openapi3filter.Options{
			IncludeResponseStatus:   d.project,
			MultiError:              true,
			SchemaValidationOptions: []openapi3.SchemaValidationOption{formats},
		},
	}
	if err := openapi3filter.ValidateResponse(req.Context(), in); err != nil {
		return fmt.Errorf("%s %s answered %d %s, which %s (%s %s) does not allow: %w",
			req.Method, req.URL.Path, status, truncate(body), d.name, route.Method, route.Path, err)
	}
	return nil
}

func truncate(b []byte) string {
	const max = 500
	if len(b) > max {
		return string(b[:max]) + "…"
	}
	return string(b)
}

// Transport checks every answer it carries and reports each violation to Report; the answer
// itself is handed on unchanged. A WebSocket upgrade is handed on unread.
type Transport struct {
	Contracts *Contracts
	Base      http.RoundTripper // nil: http.DefaultTransport
	Report    func(error)
}

// RoundTrip implements http.RoundTripper.
func (t Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	resp, err := base.RoundTrip(req)
	if err != nil || resp.StatusCode == http.StatusSwitchingProtocols {
		return resp, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if err := t.Contracts.Check(req, resp.StatusCode, resp.Header, body); err != nil {
		t.Report(err)
	}
	return resp, nil
}

// Client is an HTTP client whose answers are checked; a violation fails t.
func (c *Contracts) Client(t testing.TB) *http.Client {
	return &http.Client{Transport: Transport{Contracts: c, Report: func(err error) {
		t.Errorf("contract violation: %v", err)
	}}}
}

// repoRoot is the nearest folder up from the working directory that holds this module's go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.HasPrefix(string(b), "module github.com/tvvote/voting\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the github.com/tvvote/voting repository")
		}
		dir = parent
	}
}
