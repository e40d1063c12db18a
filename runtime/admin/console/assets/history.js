// QueueHistory keeps the last samples of every queue's statistics, fed by
// each /v1/queues poll of whichever page is open, so the charts keep their
// past when the operator moves between pages. Rates are counter deltas
// over the time between two polls; a counter that went down (an engine
// restarted) counts as no traffic.

export class QueueHistory {
  constructor(window) {
    this.window = window;
    this.byQueue = new Map();
    this.total = { depth: [], ready: [], inFlight: [], delayed: [], enq: [], ack: [] };
    this.lastAt = 0;
  }

  add(queues) {
    const now = performance.now();
    const dt = this.lastAt ? (now - this.lastAt) / 1000 : 0;
    this.lastAt = now;
    const sum = { depth: 0, ready: 0, inFlight: 0, delayed: 0, enq: 0, ack: 0 };
    const seen = new Set();
    for (const q of queues) {
      seen.add(q.name);
      let e = this.byQueue.get(q.name);
      if (!e) {
        e = { depth: [], ready: [], inFlight: [], delayed: [], enq: [], ack: [], last: null };
        this.byQueue.set(q.name, e);
      }
      const s = q.stats || {};
      const enq = e.last && dt > 0 ? Math.max(0, (s.enqueued_total - e.last.enqueued_total) / dt) : 0;
      const ack = e.last && dt > 0 ? Math.max(0, (s.acked_total - e.last.acked_total) / dt) : 0;
      e.last = s;
      e.enqRate = enq;
      e.ackRate = ack;
      const v = { depth: q.depth, ready: s.ready || 0, inFlight: s.in_flight || 0, delayed: s.delayed || 0, enq, ack };
      for (const k of Object.keys(v)) {
        push(e[k], v[k], this.window);
        sum[k] += v[k];
      }
    }
    for (const name of this.byQueue.keys()) if (!seen.has(name)) this.byQueue.delete(name);
    for (const k of Object.keys(sum)) push(this.total[k], sum[k], this.window);
  }

  queue(name) { return this.byQueue.get(name); }
}

function push(arr, v, n) {
  arr.push(v);
  if (arr.length > n) arr.shift();
}
