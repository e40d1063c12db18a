// ratelimit: a qrun handler that passes messages on at a bounded rate and
// requeues the excess with a delay (AssemblyScript SDK).
//
// A token bucket per instance holds config "burst" tokens (default: the
// rate) and refills at config "rate" per second (default 10). A message
// that gets a token is published to config "forward_to" (if set) and acked;
// one that does not is requeued, which counts no failure, with the delay
// until the next token, so it comes back when it can pass instead of
// spinning. Each instance has its own bucket: with concurrency N the
// consumer passes up to N x rate messages per second.
import {
  Message, Verdict, Level, handle, init, log, config, publish, setDelay, now,
} from "../../../sdk/assemblyscript/qrun";
export { qrun_abi_v1, qrun_alloc, qrun_free, qrun_init, qrun_handle } from "../../../sdk/assemblyscript/qrun";

let rate: f64 = 10; // tokens per second
let burst: f64 = 10; // bucket size
let tokens: f64 = 0;
let last: i64 = 0; // host clock at the last refill, Unix ns
let forwardTo: string | null = null;

// positive parses a config value as a positive number, or returns def.
function positive(key: string, def: f64): f64 {
  const s = config(key);
  if (s === null) return def;
  const v = parseFloat(s);
  if (isNaN(v) || v <= 0) {
    log(Level.Error, "config " + key + " must be a positive number, not " + s);
    return -1;
  }
  return v;
}

function setup(): bool {
  rate = positive("rate", 10);
  burst = positive("burst", rate);
  if (rate < 0 || burst < 0) return false; // refuse: a bad config would drop or flood
  tokens = burst;
  last = now();
  forwardTo = config("forward_to");
  return true;
}

function onMessage(m: Message): Verdict {
  const t = now();
  tokens = min(burst, tokens + <f64>(t - last) / 1e9 * rate);
  last = t;
  if (tokens < 1) {
    // Milliseconds until one whole token, rounded up, at least 1.
    const wait = <i64>Math.ceil((1 - tokens) / rate * 1000);
    setDelay(max(wait, 1));
    log(Level.Debug, "rate limited: requeued for " + wait.toString() + " ms");
    return Verdict.Requeue;
  }
  tokens -= 1;
  const q = forwardTo;
  if (q !== null && publish(q, m.body.buffer) != 0) {
    tokens += 1; // not passed on: give the token back
    return Verdict.Nack;
  }
  return Verdict.Ack;
}

init(setup);
handle(onMessage);
