// Spike: the host says "vote now": from nothing to the peak in 10 s, held a minute. Not one
// 503 while the rate climbs (the edge must not shed the ramp), p99 under 200 ms.
import { Counter } from 'k6/metrics';
import exec from 'k6/execution';
import { answers, arrivals, rps, vote, SHOW_PEAK_RPS } from './lib.js';

const RAMP_MS = 10000;
const rampUnavailable = new Counter('vote_503_during_ramp');

export const options = {
  scenarios: {
    spike: arrivals([
      { target: rps(SHOW_PEAK_RPS), duration: `${RAMP_MS / 1000}s` },
      { target: rps(SHOW_PEAK_RPS), duration: __ENV.DURATION || '50s' },
    ], 1500),
  },
  thresholds: {
    ...answers,
    vote_503_during_ramp: ['count==0'],
    'http_req_duration{expected_response:true}': ['p(99)<200'],
    http_req_failed: ['rate<0.001'],
  },
};

export default function () {
  const res = vote();
  if (res.status === 503 && Date.now() - exec.scenario.startTime < RAMP_MS) {
    rampUnavailable.add(1);
  }
}
