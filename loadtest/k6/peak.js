// Peak: the show's 250,000 votes/s, reached in 30 s and held. Under 0.1 % failed, p99 under
// 100 ms.
import { answers, arrivals, rps, vote, SHOW_PEAK_RPS } from './lib.js';

export const options = {
  scenarios: {
    peak: arrivals([
      { target: rps(SHOW_PEAK_RPS), duration: '30s' },
      { target: rps(SHOW_PEAK_RPS), duration: __ENV.DURATION || '60s' },
    ], 1000),
  },
  thresholds: {
    ...answers,
    'http_req_duration{expected_response:true}': ['p(99)<100'],
    http_req_failed: ['rate<0.001'],
    checks: ['rate>0.999'],
  },
};

export default vote;
