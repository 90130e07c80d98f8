// Sustained: 60 % of the peak (150,000 votes/s) held long enough to show a trend; the runner
// samples every process's memory meanwhile (no leak: a flat slope). p99 under 100 ms, under
// 0.1 % failed, all the way.
import { answers, arrivals, rps, vote, SHOW_PEAK_RPS } from './lib.js';

export const options = {
  scenarios: {
    sustained: arrivals([
      { target: rps(0.6 * SHOW_PEAK_RPS), duration: '10s' },
      { target: rps(0.6 * SHOW_PEAK_RPS), duration: __ENV.DURATION || '6m' },
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
