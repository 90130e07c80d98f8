package results

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"

	"github.com/tvvote/voting/contract"
)

// web holds the live results page: plain HTML, CSS and JS without a build step, so what is
// reviewed is what runs on air.
//
//go:embed web/live.html web/live.css web/live.js
var web embed.FS

// pageFile is one embedded file with its precomputed ETag.
type pageFile struct {
	body  []byte
	ctype string
	etag  string
}

var pageFiles = func() map[string]pageFile {
	out := map[string]pageFile{}
	entries, err := fs.ReadDir(web, "web")
	if err != nil {
		panic(err) // the embed directive guarantees the folder
	}
	for _, e := range entries {
		b, err := web.ReadFile("web/" + e.Name())
		if err != nil {
			panic(err)
		}
		sum := sha256.Sum256(b)
		ctype := mime.TypeByExtension(path.Ext(e.Name()))
		switch path.Ext(e.Name()) { // do not depend on the host's mime.types
		case ".html":
			ctype = "text/html; charset=utf-8"
		case ".css":
			ctype = "text/css; charset=utf-8"
		case ".js":
			ctype = "text/javascript; charset=utf-8"
		}
		out[e.Name()] = pageFile{body: b, ctype: ctype, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
	}
	return out
}()

// pageCSP lets the page load only its own script and style and talk only to its own origin
// (the results API and the stream; CSP3 'self' covers ws:/wss: to the same host).
const pageCSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'"

// handlePage serves GET /api/v1/results/page/{electionId}: the on-air live results screen. The
// page is the same for every election (it reads the id from its own URL), so it is served
// without touching the database; the stream token comes as ?token= and is read by the script.
func (s *Server) handlePage(w http.ResponseWriter, r *http.Request) {
	if _, ok := contract.CanonicalUUID(r.PathValue("electionId")); !ok {
		s.writeError(w, r, contract.CodeInvalidElectionID, "electionId must be a UUID")
		return
	}
	s.servePageFile(w, r, "live.html")
}

// handlePageAsset serves the page's script and stylesheet.
func (s *Server) handlePageAsset(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("file")
	if name == "live.html" {
		name = "" // only through handlePage
	}
	s.servePageFile(w, r, name)
}

func (s *Server) servePageFile(w http.ResponseWriter, r *http.Request, name string) {
	f, ok := pageFiles[name]
	if !ok {
		s.writeError(w, r, contract.CodeNotFound, "no such resource")
		return
	}
	h := w.Header()
	h.Set("Content-Type", f.ctype)
	h.Set("ETag", f.etag)
	// no-cache = revalidate every time: a fixed page reaches the studio screen on its next
	// reload, and the 304 costs nothing.
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	// The page URL carries a token: never leak it to anyone in a Referer.
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Content-Security-Policy", pageCSP)
	if inm := r.Header.Get("If-None-Match"); inm != "" && etagMatches(inm, f.etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	_, _ = w.Write(f.body)
}
