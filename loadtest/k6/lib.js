// Shared by the four scenarios (baseline.js, peak.js, sustained.js, spike.js): one fresh
// viewer's vote per iteration, the scale factor, and the run's inputs.
//
// Inputs (the runner loadtest/k6run sets them; by hand see BENCHMARKS.md "k6"):
//   BASE_URL      the edge, e.g. http://127.0.0.1:8080
//   TOKENS        a file with one viewer's access token per line
//   ELECTIONS     comma-separated election ids; each token votes once in each, in order, so
//                 tokens × elections fresh votes are available
//   CANDIDATES    comma-separated candidate ids per election, elections separated by ';'
//   SCALE         the share of the show's figures this machine runs (default 1/1000)
//   OFFSET        votes the runs before this one used up (iterations restart at 0 in each run)
import http from 'k6/http';
import { check } from 'k6';
import { SharedArray } from 'k6/data';
import exec from 'k6/execution';

const tokens = new SharedArray('tokens', () => open(__ENV.TOKENS).split('\n').filter((t) => t.length > 0));
const elections = (__ENV.ELECTIONS || '').split(',');
const candidates = (__ENV.CANDIDATES || '').split(';').map((c) => c.split(','));

// The show: 250,000 votes/s at its peak. SCALE brings every rate to this machine; durations
// are the scenarios' own.
export const SHOW_PEAK_RPS = 250000;
export const SCALE = Number(__ENV.SCALE || 1 / 1000);
export const rps = (showRps) => Math.max(1, Math.round(showRps * SCALE));

const offset = Number(__ENV.OFFSET || 0);

// vote casts vote i (this run's iteration after OFFSET): token i mod T in election ⌊i / T⌋.
export function vote() {
  const i = offset + exec.scenario.iterationInTest;
  const e = Math.floor(i / tokens.length);
  if (e >= elections.length) {
    exec.test.abort('out of fresh votes: mint more tokens or seed more elections');
  }
  const cands = candidates[e];
  const body = JSON.stringify({
    electionId: elections[e],
    candidateId: cands[i % cands.length],
    captchaToken: 'captcha-off-load-test-token',
  });
  const res = http.post(`${__ENV.BASE_URL}/api/v1/votes`, body, {
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${tokens[i % tokens.length]}` },
  });
  check(res, { 'vote accepted': (r) => r.status === 200 && r.json('status') === 'accepted' });
  return res;
}

// answers are thresholds that can never fail, there so that the summary counts every answer
// by status: 409 (a viewer voting twice), 429, 503 (shed or in doubt), 0 (no answer in time).
export const answers = {
  'http_reqs{status:409}': ['count>=0'],
  'http_reqs{status:429}': ['count>=0'],
  'http_reqs{status:503}': ['count>=0'],
  'http_reqs{status:0}': ['count>=0'],
};

// arrivals is a ramping-arrival-rate scenario of the given stages.
export function arrivals(stages, maxVUs) {
  return {
    executor: 'ramping-arrival-rate',
    startRate: 0,
    timeUnit: '1s',
    preAllocatedVUs: Math.min(200, maxVUs),
    maxVUs: maxVUs,
    stages: stages,
  };
}
