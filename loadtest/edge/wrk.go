package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// wrkResult is what the closed-loop phases report: wrk is far cheaper per request than a Go
// client, so the direct_response baseline is not capped by the load generator.
type wrkResult struct {
	rps      float64
	p50, p99 time.Duration
	non2xx   int64
	errors   int64
}

var (
	reRPS    = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	rePct    = regexp.MustCompile(`^\s+(50|99)(?:\.000)?%\s+([0-9.]+)(us|ms|s)`)
	reNon2xx = regexp.MustCompile(`Non-2xx or 3xx responses:\s+(\d+)`)
	reErrors = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
)

// runWrk runs wrk against url for d; script and its args are optional.
func runWrk(url string, conns int, d time.Duration, script string, args ...string) (wrkResult, error) {
	threads := 2
	cmdArgs := []string{"-t", strconv.Itoa(threads), "-c", strconv.Itoa(conns), "-d", fmt.Sprintf("%ds", int(d.Seconds())), "--latency"}
	if script != "" {
		cmdArgs = append(cmdArgs, "-s", script)
	}
	cmdArgs = append(cmdArgs, url)
	if len(args) > 0 {
		cmdArgs = append(cmdArgs, "--")
		cmdArgs = append(cmdArgs, args...)
		cmdArgs = append(cmdArgs, strconv.Itoa(threads))
	}
	out, err := exec.Command("wrk", cmdArgs...).CombinedOutput()
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk: %v: %s", err, out)
	}
	var r wrkResult
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		line := sc.Text()
		if m := reRPS.FindStringSubmatch(line); m != nil {
			r.rps, _ = strconv.ParseFloat(m[1], 64)
		}
		if m := rePct.FindStringSubmatch(line); m != nil {
			v, _ := strconv.ParseFloat(m[2], 64)
			unit := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second}[m[3]]
			if m[1] == "50" {
				r.p50 = time.Duration(v * float64(unit))
			} else {
				r.p99 = time.Duration(v * float64(unit))
			}
		}
		if m := reNon2xx.FindStringSubmatch(line); m != nil {
			r.non2xx, _ = strconv.ParseInt(m[1], 10, 64)
		}
		if m := reErrors.FindStringSubmatch(line); m != nil {
			for _, s := range m[1:] {
				n, _ := strconv.ParseInt(s, 10, 64)
				r.errors += n
			}
		}
	}
	if r.rps == 0 {
		return r, fmt.Errorf("wrk printed no rate: %s", out)
	}
	return r, nil
}

// writeFiles puts the tokens and the body where the wrk script reads them.
func writeFiles(dir string, tokens []string, body string) (tokFile, bodyFile string, err error) {
	tokFile, bodyFile = filepath.Join(dir, "tokens.txt"), filepath.Join(dir, "body.json")
	if err = os.WriteFile(tokFile, []byte(strings.Join(tokens, "\n")+"\n"), 0o644); err != nil {
		return
	}
	err = os.WriteFile(bodyFile, []byte(body), 0o644)
	return
}
