package devstack

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// DefaultControlAddr is where `make run` serves ControlHandler.
const DefaultControlAddr = "127.0.0.1:18009"

// ControlActions are the faults ControlHandler injects.
var ControlActions = []string{"kill", "restart", "freeze", "thaw"}

// ControlHandler serves the fault API over HTTP, for breaking a running stack by hand:
//
//	GET  /components                  one line per component: name, state, pid
//	POST /components/{name}/{action}  action: kill, restart, freeze or thaw
//
// Answers are plain text. It has no authentication: serve it on loopback only.
func (s *Stack) ControlHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /components", func(w http.ResponseWriter, r *http.Request) {
		pids := s.PIDs()
		for _, name := range s.Components() {
			pid := "-"
			if p, ok := pids[name]; ok {
				pid = itoa(p)
			}
			fmt.Fprintf(w, "%-13s %-8s %s\n", name, s.State(name), pid)
		}
	})
	mux.HandleFunc("POST /components/{name}/{action}", func(w http.ResponseWriter, r *http.Request) {
		name, action := r.PathValue("name"), r.PathValue("action")
		if _, err := s.component(name); err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		var err error
		switch action {
		case "kill":
			err = s.Kill(name)
		case "restart":
			// The restart goes on if the caller gives up waiting for it.
			ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 3*time.Minute)
			defer cancel()
			err = s.Restart(ctx, name)
		case "freeze":
			err = s.Freeze(name)
		case "thaw":
			err = s.Thaw(name)
		default:
			http.Error(w, fmt.Sprintf("unknown action %q (one of %s)", action, strings.Join(ControlActions, ", ")),
				http.StatusNotFound)
			return
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusConflict)
			return
		}
		fmt.Fprintf(w, "%s: %s\n", name, s.State(name))
	})
	return mux
}

// Control asks the control endpoint at addr for an action on a component ("components" needs
// no component) and returns its answer.
func Control(ctx context.Context, addr, action, component string) (string, error) {
	method, path := http.MethodPost, "/components/"+url.PathEscape(component)+"/"+url.PathEscape(action)
	if action == "components" {
		method, path = http.MethodGet, "/components"
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+path, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("no stack answers at %s (is `make run` running?): %w", addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s %s: %s", action, component, strings.TrimSpace(string(body)))
	}
	return string(body), nil
}
