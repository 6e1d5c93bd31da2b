// Load test of a Mercato deployment through its gateway, at fixed arrival rates (open loop:
// requests start on schedule whether or not earlier ones have finished, so a slow system
// shows up as latency and dropped iterations rather than as a politely lower rate).
//
//   MERCATO_URL=https://shop.example.com MERCATO_TOKEN="$(mercato token)" \
//     k6 run bench/k6/mercato.js
//
// Scenarios (MERCATO_SCENARIOS, comma-separated, default "browse,orders"):
//   browse  authenticated GETs through the gateway (BROWSE_PATH) at BROWSE_RATE per second
//   orders  POST /api/v1/orders at ORDER_RATE per second, each followed to CONFIRMED or
//           CANCELLED by polling GET /api/v1/orders/{id} (ORDER_FOLLOW=false: place only);
//           with ORDER_COUNT set, a burst instead: ORDER_COUNT orders placed by ORDER_VUS
//           VUs, each POSTing its next order as soon as the last was accepted (closed loop:
//           as fast as the gateway admits them), a rejected POST retried with its key
//
// Environment (defaults in brackets):
//   MERCATO_URL [http://127.0.0.1:8080]   the gateway
//   MERCATO_TOKEN (required)              a customer's bearer token
//   DURATION [1m]                         how long each scenario runs
//   BROWSE_RATE [50], BROWSE_PATH [/api/v1/products/SOCKS]
//   BROWSE_ANONYMOUS [false]              true: browse without the token (a public page)
//   ORDER_RATE [10], ORDER_LINES [[{"sku":"SOCKS","quantity":1}]]   (JSON)
//   ORDER_SKUS (comma-separated; if set, each order is one unit each of two of them, at random)
//   ORDER_FOLLOW [true], FOLLOW_TIMEOUT [30] s, FOLLOW_POLL [0.1] s
//   ORDER_COUNT [unset], ORDER_VUS [8 for a burst], MAX_DURATION [10m]   the burst
//   ORDER_VUS, ORDER_MAX_VUS, BROWSE_VUS, BROWSE_MAX_VUS   pre-allocated and maximum VUs
//   P99_TERMINAL_MS [500], P99_POST_MS [500], P99_BROWSE_MS [250]   threshold limits
//
// Time to terminal is reported twice: as the client saw it (order_time_to_terminal, POST sent
// to terminal status read; poll resolution FOLLOW_POLL) and as the order service recorded it
// (order_saga_duration, from the order's created_at to its terminal history entry).
import http from 'k6/http';
import { check, sleep } from 'k6';
import exec from 'k6/execution';
import { Counter, Rate, Trend } from 'k6/metrics';

const BASE_URL = (__ENV.MERCATO_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
const TOKEN = __ENV.MERCATO_TOKEN || '';
const DURATION = __ENV.DURATION || '1m';
const SCENARIOS = (__ENV.MERCATO_SCENARIOS || 'browse,orders').split(',').map((s) => s.trim());

const BROWSE_RATE = Number(__ENV.BROWSE_RATE || 50);
const BROWSE_PATH = __ENV.BROWSE_PATH || '/api/v1/products/SOCKS';
const BROWSE_ANONYMOUS = __ENV.BROWSE_ANONYMOUS === 'true';
const ORDER_RATE = Number(__ENV.ORDER_RATE || 10);
const ORDER_LINES = JSON.parse(__ENV.ORDER_LINES || '[{"sku":"SOCKS","quantity":1}]');
const ORDER_SKUS = (__ENV.ORDER_SKUS || '').split(',').filter((s) => s);
const FOLLOW = (__ENV.ORDER_FOLLOW || 'true') !== 'false';
const FOLLOW_TIMEOUT = Number(__ENV.FOLLOW_TIMEOUT || 30);
const FOLLOW_POLL = Number(__ENV.FOLLOW_POLL || 0.1);
const ORDER_COUNT = Number(__ENV.ORDER_COUNT || 0);
// A burst retries a rejected POST (same Idempotency-Key, so never a second order) this many
// times, this many seconds apart, so that ORDER_COUNT orders are really placed.
const BURST_RETRIES = 50;
const BURST_RETRY_PAUSE = 0.2;

const timeToTerminal = new Trend('order_time_to_terminal', true);
const sagaDuration = new Trend('order_saga_duration', true);
const reachedTerminal = new Rate('order_reached_terminal');
const outcomes = new Counter('order_outcomes');
// POSTs not answered 201, and among them the rate limiter's 429s and the 503s of a gateway
// shedding load (breaker open, bulkhead full).
const rejected = new Counter('order_posts_rejected');
const rateLimited = new Counter('order_posts_rate_limited');
const shed = new Counter('order_posts_shed');
const browseRateLimited = new Counter('browse_rate_limited');

// A VU is busy for one request (browse) or for a whole saga (orders, when followed): size
// the pools from the rates so that the schedule is kept, with room for a slow system.
function vus(name, rate, busySeconds) {
  const base = Math.max(5, Math.ceil(rate * busySeconds));
  return {
    preAllocatedVUs: Number(__ENV[`${name}_VUS`] || base),
    maxVUs: Number(__ENV[`${name}_MAX_VUS`] || base * 10),
  };
}

// k6 takes whole arrivals per time unit: per minute keeps fractional rates per second.
function perMinute(perSecond) {
  return { rate: Math.max(1, Math.round(perSecond * 60)), timeUnit: '1m' };
}

const scenarios = {};
const thresholds = {
  http_req_failed: ['rate<0.01'],
  // Iterations k6 could not start on time: the load generator, not the system, fell behind.
  dropped_iterations: ['count<1'],
};
if (SCENARIOS.includes('browse')) {
  scenarios.browse = {
    executor: 'constant-arrival-rate',
    exec: 'browse',
    ...perMinute(BROWSE_RATE),
    duration: DURATION,
    ...vus('BROWSE', BROWSE_RATE, 0.2),
  };
  thresholds['http_req_duration{scenario:browse}'] = [`p(99)<${__ENV.P99_BROWSE_MS || 250}`];
}
if (SCENARIOS.includes('orders') && ORDER_COUNT > 0) {
  scenarios.orders = {
    executor: 'shared-iterations',
    exec: 'placeOrder',
    iterations: ORDER_COUNT,
    vus: Number(__ENV.ORDER_VUS || 8),
    maxDuration: __ENV.MAX_DURATION || '10m',
  };
} else if (SCENARIOS.includes('orders')) {
  scenarios.orders = {
    executor: 'constant-arrival-rate',
    exec: 'placeOrder',
    ...perMinute(ORDER_RATE),
    duration: DURATION,
    ...vus('ORDER', ORDER_RATE, FOLLOW ? 2 : 0.5),
  };
}
if (SCENARIOS.includes('orders')) {
  thresholds['http_req_duration{name:POST /api/v1/orders}'] = [`p(99)<${__ENV.P99_POST_MS || 500}`];
  if (FOLLOW) {
    thresholds.order_time_to_terminal = [`p(99)<${__ENV.P99_TERMINAL_MS || 500}`];
    thresholds.order_reached_terminal = ['rate>0.99'];
  }
}

export const options = {
  scenarios,
  thresholds,
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
};

const authorized = { Authorization: `Bearer ${TOKEN}` };

export function setup() {
  if (!TOKEN) {
    throw new Error('MERCATO_TOKEN is required: a bearer token the gateway accepts');
  }
  const response = http.get(`${BASE_URL}${BROWSE_PATH}`, { headers: authorized });
  if (response.status !== 200) {
    throw new Error(`GET ${BROWSE_PATH} answered ${response.status}: check URL and token`);
  }
}

export function browse() {
  const response = http.get(`${BASE_URL}${BROWSE_PATH}`, {
    headers: BROWSE_ANONYMOUS ? {} : authorized,
    tags: { name: `GET ${BROWSE_PATH}` },
  });
  if (response.status === 429) {
    browseRateLimited.add(1);
  }
  check(response, { 'browse 200': (r) => r.status === 200 });
}

function idempotencyKey() {
  const random = Math.floor(Math.random() * 2 ** 48).toString(36);
  return `k6-${exec.vu.idInTest}-${exec.scenario.iterationInTest}-${random}`;
}

// Spreading orders over SKUs keeps them from all queueing on one product row's lock.
function orderLines() {
  if (ORDER_SKUS.length < 2) {
    return ORDER_LINES;
  }
  const first = Math.floor(Math.random() * ORDER_SKUS.length);
  const second = (first + 1 + Math.floor(Math.random() * (ORDER_SKUS.length - 1))) % ORDER_SKUS.length;
  return [first, second].map((i) => ({ sku: ORDER_SKUS[i], quantity: 1 }));
}

function post(body, key) {
  const response = http.post(`${BASE_URL}/api/v1/orders`, body, {
    headers: { ...authorized, 'Content-Type': 'application/json', 'Idempotency-Key': key },
    tags: { name: 'POST /api/v1/orders' },
  });
  if (response.status !== 201) {
    rejected.add(1);
    if (response.status === 429) {
      rateLimited.add(1);
    } else if (response.status === 503) {
      shed.add(1);
    }
  }
  return response;
}

export function placeOrder() {
  const body = JSON.stringify({ lines: orderLines() });
  const key = idempotencyKey();
  const sent = Date.now();
  let response = post(body, key);
  for (let retry = 0; ORDER_COUNT > 0 && response.status !== 201 && retry < BURST_RETRIES; retry++) {
    sleep(BURST_RETRY_PAUSE);
    response = post(body, key);
  }
  if (!check(response, { 'order accepted': (r) => r.status === 201 }) || !FOLLOW) {
    return;
  }
  const id = response.json('id');
  const deadline = sent + FOLLOW_TIMEOUT * 1000;
  while (Date.now() < deadline) {
    sleep(FOLLOW_POLL);
    const poll = http.get(`${BASE_URL}/api/v1/orders/${id}`, {
      headers: authorized,
      tags: { name: 'GET /api/v1/orders/{id}' },
    });
    if (poll.status !== 200) {
      continue;
    }
    const order = poll.json();
    if (order.status === 'PENDING') {
      continue;
    }
    timeToTerminal.add(Date.now() - sent);
    const ended = order.history[order.history.length - 1].at;
    sagaDuration.add(Date.parse(ended) - Date.parse(order.created_at));
    outcomes.add(1, { status: order.status, reason: order.cancel_reason || '' });
    reachedTerminal.add(true);
    return;
  }
  reachedTerminal.add(false);
}
