// Baseline: the show before the call to vote, 10 % of the peak (25,000 votes/s in production),
// steady for a minute. Every vote answered 200, p99 under 50 ms.
import { answers, arrivals, rps, vote, SHOW_PEAK_RPS } from './lib.js';

export const options = {
  scenarios: {
    baseline: arrivals([
      { target: rps(0.1 * SHOW_PEAK_RPS), duration: '5s' },
      { target: rps(0.1 * SHOW_PEAK_RPS), duration: __ENV.DURATION || '60s' },
    ], 200),
  },
  thresholds: {
    ...answers,
    'http_req_duration{expected_response:true}': ['p(99)<50'],
    http_req_failed: ['rate<0.001'],
    checks: ['rate>0.999'],
  },
};

export default vote;
