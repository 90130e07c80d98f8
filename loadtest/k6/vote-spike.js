// k6 model of the "vote now" spike against a staging fleet (or the local stack).
//
//   k6 run -e BASE_URL=http://127.0.0.1:8080 -e ELECTION_ID=… -e CANDIDATE_IDS=a,b,c \
//          -e TOKENS=tokens.txt -e PEAK_RPS=2000 loadtest/k6/vote-spike.js
//
// TOKENS holds one access token per line, one per viewer (the dev IdP's /tokens?n=N mints
// them). Run against an edge whose captcha mode is "off" (load tests only): solving a proof of
// work per vote would measure the load generator. Locally: `bin/devstack -captcha off
// -no-limits`, then `curl -s 'http://127.0.0.1:8085/tokens?n=20000' > tokens.txt`.
// Arrival rate ramps from 0 to PEAK_RPS in RAMP (10s), holds HOLD (60s) and falls: the shape
// of a host saying "vote now".
import http from 'k6/http';
import { check } from 'k6';
import { SharedArray } from 'k6/data';
import exec from 'k6/execution';

const tokens = new SharedArray('tokens', () => open(__ENV.TOKENS).split('\n').filter((t) => t.length > 0));
const candidates = (__ENV.CANDIDATE_IDS || '').split(',');
const peak = Number(__ENV.PEAK_RPS || 1000);

export const options = {
  scenarios: {
    spike: {
      executor: 'ramping-arrival-rate',
      startRate: 0,
      timeUnit: '1s',
      preAllocatedVUs: 200,
      maxVUs: 2000,
      stages: [
        { target: peak, duration: __ENV.RAMP || '10s' },
        { target: peak, duration: __ENV.HOLD || '60s' },
        { target: 0, duration: __ENV.RAMP || '10s' },
      ],
    },
  },
  thresholds: {
    // The contract's promise at 70 % of capacity: see BENCHMARKS.md for measured figures.
    'http_req_duration{expected_response:true}': ['p(99)<50'],
    checks: ['rate>0.999'],
  },
};

export default function () {
  const i = exec.scenario.iterationInTest;
  if (i >= tokens.length) {
    exec.test.abort('out of fresh viewers: mint more tokens');
  }
  const body = JSON.stringify({
    electionId: __ENV.ELECTION_ID,
    candidateId: candidates[i % candidates.length],
    captchaToken: 'captcha-off-load-test-token',
  });
  const res = http.post(`${__ENV.BASE_URL}/api/v1/votes`, body, {
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${tokens[i]}` },
  });
  check(res, {
    'vote accepted': (r) => r.status === 200 && r.json('status') === 'accepted',
  });
}
