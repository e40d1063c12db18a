package redis

import "github.com/redis/go-redis/v9"

// The engine's state changes are Lua scripts: Redis runs each one whole,
// with nothing else in between, so a message is never in two places (a
// stream entry and the delayed set, a lease and no entry) and any number
// of qrun processes may run them against the same keys at the same time.
// Each reads the server's clock (TIME), so every node agrees on when a
// lease expires or a delay ends. Times are microseconds since the epoch.
//
// A queue's keys (see Engine.keys): the stream S with consumer group
// "qrun", the delayed set D (score: when due; member: a packed message),
// the lease set L (score: when the lease expires; member: a batch's lease
// token), the stats hash C and the settings hash Q, which Open writes so
// that every node, and a handle opened by name alone, applies the queue's
// latest settings. A stream entry's fields are m (the message, encoded by
// codec.go), a (attempts before this delivery), f (failures so far), x
// (when an undelivered entry's TTL runs out, 0 for none) and, for a dead
// letter, r and o (the reason and the source queue); an entry of m alone
// is a message with none of the others (attempts and failures 0, no TTL).
//
// A lease covers a batch: a Receive reads with XREADGROUP as a consumer
// named after a new random token, so the batch's entries are pending
// under that consumer, and the lease set holds one member for it. The
// token is never used again: a stale holder (its token expired and
// reaped) finds no lease. Every delivery is a stream entry of its own: a
// message that comes back (nack, requeue, expired lease) is written as a
// new entry carrying its attempts and failures, and the old one is
// acknowledged and deleted.

// common is the prelude every script shares.
const common = `
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function fmt(n) return string.format('%.0f', n) end
local function fields(flat)
  local h = {}
  for i = 1, #flat, 2 do h[flat[i]] = flat[i + 1] end
  return h
end
-- A delayed member: "a f t #r #o " .. r .. o .. m, where t is the TTL to
-- apply once visible.
local function pack(a, f, t, r, o, m)
  return a .. ' ' .. f .. ' ' .. fmt(t) .. ' ' .. #r .. ' ' .. #o .. ' ' .. r .. o .. m
end
local function unpack_member(s)
  local v, p = {}, 1
  for i = 1, 5 do
    local q = string.find(s, ' ', p, true)
    v[i] = tonumber(string.sub(s, p, q - 1))
    p = q + 1
  end
  local r = string.sub(s, p, p + v[4] - 1)
  local o = string.sub(s, p + v[4], p + v[4] + v[5] - 1)
  return v[1], v[2], v[3], r, o, string.sub(s, p + v[4] + v[5])
end
-- xadd writes a stream entry. A fresh message (no attempts, failures,
-- TTL or dead-letter fields: most of them) is the field m alone, which
-- XREADGROUP hands to Go for a quarter of the cost of all six; take reads
-- a missing field as 0 or ''.
local function xadd(s, m, a, f, x, r, o)
  if r == '' and o == '' and x == 0 and tonumber(a) == 0 and tonumber(f) == 0 then
    return redis.call('XADD', s, '*', 'm', m)
  end
  if r ~= '' or o ~= '' then
    return redis.call('XADD', s, '*', 'm', m, 'a', a, 'f', f, 'x', fmt(x), 'r', r, 'o', o)
  end
  return redis.call('XADD', s, '*', 'm', m, 'a', a, 'f', f, 'x', fmt(x))
end
-- reenter puts a message back: into the stream now, or into the delayed
-- set until now+delay. A message that was delivered has no TTL any more.
local function reenter(s, d, now, delay, m, a, f, r, o)
  if delay > 0 then
    redis.call('ZADD', d, fmt(now + delay), pack(a, f, 0, r, o, m))
  else
    xadd(s, m, a, f, 0, r, o)
  end
end
-- take removes a pending entry from stream s and returns its fields, or
-- nil when it is not pending (settled already).
local function take(s, group, sid)
  if redis.call('XACK', s, group, sid) == 0 then return nil end
  local e = redis.call('XRANGE', s, sid, sid)
  redis.call('XDEL', s, sid)
  if #e == 0 then return nil end
  local h = fields(e[1][2])
  h.a, h.f = tonumber(h.a or '0'), tonumber(h.f or '0')
  h.r, h.o = h.r or '', h.o or ''
  return h
end
-- held reports whether token's batch lease in lease set l is unexpired.
local function held(l, token, now)
  local score = redis.call('ZSCORE', l, token)
  return score and tonumber(score) > now
end
-- pendingof returns the group's XPENDING summary and a set of the
-- consumers (batch tokens) that hold pending entries.
local function pendingof(s, group)
  local p = redis.call('XPENDING', s, group)
  local busy = {}
  if p[1] > 0 then
    for _, cc in ipairs(p[4]) do busy[cc[1]] = true end
  end
  return p, busy
end
-- release ends the lease of each of tokens that none of its entries is
-- pending under any more (busy: from pendingof): the consumer named after
-- it leaves the group and the member the lease set.
local function release(s, l, group, tokens, busy)
  for _, t in ipairs(tokens) do
    if not busy[t] then
      redis.call('XGROUP', 'DELCONSUMER', s, group, t)
      redis.call('ZREM', l, t)
    end
  end
end
-- drop deletes acknowledged entries from stream s: ARGV[r[1]..r[2]],
-- ARGV[r[3]..r[4]], ..., each range in stream order; p is the group's
-- XPENDING summary, taken after every XACK of the settle. Every entry the
-- group delivered and nobody settled is pending (under its batch's
-- token, until settled or reaped), every ready entry lies after the group's
-- last delivered ID, and settled entries are deleted: so every entry
-- before the floor (the lowest pending ID, or when none is pending the
-- ID after the last delivered one) is an acked one. One XTRIM MINID removes
-- those, walking the stream's head in order, for much less than XDEL
-- costs to find each; only the IDs at or after the floor (another
-- worker's older batch is still out) need XDEL. A range being in stream
-- order, the first of them at or after the floor is found by bisection:
-- a settle does no Lua work per acked ID.
local function idparts(id)
  local dash = string.find(id, '-', 1, true)
  return tonumber(string.sub(id, 1, dash - 1)), tonumber(string.sub(id, dash + 1))
end
local function drop(s, group, r, p)
  local fms, fseq
  if p[1] > 0 then
    fms, fseq = idparts(p[2])
  else
    for _, g in ipairs(redis.call('XINFO', 'GROUPS', s)) do
      local h = fields(g)
      if h.name == group then
        fms, fseq = idparts(h['last-delivered-id'])
        fseq = fseq + 1
      end
    end
  end
  local function below(x)
    local ms, seq = idparts(ARGV[x])
    return ms < fms or (ms == fms and seq < fseq)
  end
  local trim = false
  for x = 1, #r, 2 do
    local lo, hi = r[x], r[x + 1]
    -- first: the first index at or after the floor, hi + 1 for none
    local first
    if not fms or fseq >= 2 ^ 53 then
      first = lo
    elseif below(hi) then
      first = hi + 1
    elseif not below(lo) then
      first = lo
    else
      local a, b = lo, hi -- below(a), not below(b)
      while b - a > 1 do
        local m = math.floor((a + b) / 2)
        if below(m) then a = m else b = m end
      end
      first = b
    end
    if first > lo then trim = true end
    for y = first, hi, 1000 do
      redis.call('XDEL', s, unpack(ARGV, y, math.min(y + 999, hi)))
    end
  end
  if trim then
    redis.call('XTRIM', s, 'MINID', fmt(fms) .. '-' .. fmt(fseq))
  end
end
-- config reads a queue's settings from its hash (written by Open): the
-- lease, max attempts, dead-letter queue name and retry policy, all in
-- microseconds. A queue never opened with settings gets the defaults.
local function config(k)
  local v = redis.call('HMGET', k, 'lease', 'maxa', 'dl', 'ri', 'rm', 'rx', 'rj')
  return {lease = tonumber(v[1] or '30000000'), maxa = tonumber(v[2] or '0'), dl = v[3] or '',
    ri = tonumber(v[4] or '0'), rm = tonumber(v[5] or '0'), rx = tonumber(v[6] or '1'), rj = tonumber(v[7] or '0')}
end
-- deadletter moves a message to the queue's dead-letter queue (its keys
-- begin with prefix), or drops it when the queue has none.
local function deadletter(c, cfg, prefix, m, a, f, reason, source)
  redis.call('HINCRBY', c, 'dead_lettered', 1)
  if cfg.dl ~= '' then
    local p = prefix .. '{' .. cfg.dl .. '}:'
    xadd(p .. 's', m, a, f, 0, reason, source)
    redis.call('HINCRBY', p .. 'c', 'enqueued', 1)
  end
end
-- receive leases what an XREADGROUP before it (in the same MULTI) read as
-- the consumer token ('' for none), then does the queue's housekeeping,
-- and returns the receive script's answer (see receiveScript). got is 1 or
-- 0 when the caller knows whether the token holds entries, nil otherwise.
-- cfg is the queue's config when the caller read it already.
local function receive(s, d, l, c, q, group, token, name, prefix, want, now, got, cfg)
  cfg = cfg or config(q)
  local lease, maxa = cfg.lease, cfg.maxa
  local initial, max, mult, jitter = cfg.ri, cfg.rm, cfg.rx, cfg.rj
  local function backoff(n)
    if initial <= 0 then return 0 end
    if mult < 1 then mult = 1 end
    local v = initial * mult ^ n
    if max > 0 and v > max then v = max end
    if jitter > 0 then v = v * (1 + jitter * (2 * math.random() - 1)) end
    if max > 0 and v > max then v = max end
    return math.floor(v)
  end
  if token == '' then
    got = 0
  else
    if got == nil then
      got = 0
      if #redis.call('XPENDING', s, group, '-', '+', 1, token) > 0 then got = 1 end
    end
    if got == 1 then
      redis.call('ZADD', l, fmt(now + lease), token)
    else
      redis.call('XGROUP', 'DELCONSUMER', s, group, token)
    end
  end
  local function first_score(k)
    local f = redis.call('ZRANGE', k, 0, 0, 'WITHSCORES')
    if #f > 0 then return tonumber(f[2]) end
    return -1
  end
  local moved = 0
  local nl, nd = first_score(l), first_score(d)
  if nl >= 0 and nl <= now then
    for _, tok in ipairs(redis.call('ZRANGEBYSCORE', l, '-inf', fmt(now), 'LIMIT', 0, 64)) do
      while true do
        local p = redis.call('XPENDING', s, group, '-', '+', 1000, tok)
        if #p == 0 then break end
        for _, pe in ipairs(p) do
          local h = take(s, group, pe[1])
          if h then
            redis.call('HINCRBY', c, 'expired_lease', 1)
            local a, f = h.a + 1, h.f + 1
            if maxa > 0 and f >= maxa then
              deadletter(c, cfg, prefix, h.m, a, f, 'lease expired (failure ' .. f .. ' of ' .. maxa .. ')', name)
            else
              local delay = backoff(f - 1)
              reenter(s, d, now, delay, h.m, a, f, h.r, h.o)
              if delay <= 0 then moved = moved + 1 end
            end
          end
        end
      end
      redis.call('XGROUP', 'DELCONSUMER', s, group, tok)
      redis.call('ZREM', l, tok)
    end
    nl, nd = first_score(l), first_score(d)
  end
  if nd >= 0 and nd <= now then
    for _, mem in ipairs(redis.call('ZRANGEBYSCORE', d, '-inf', fmt(now), 'LIMIT', 0, 1024)) do
      redis.call('ZREM', d, mem)
      local a, f, t, r, o, m = unpack_member(mem)
      local x = 0
      if t > 0 then x = now + t end
      xadd(s, m, a, f, x, r, o)
      moved = moved + 1
    end
    nd = first_score(d)
  end
  local next = nl
  if nd >= 0 and (next < 0 or nd < next) then next = nd end
  local last = '0-0'
  if got == 0 then
    local r = redis.call('XREVRANGE', s, '+', '-', 'COUNT', 1)
    if #r > 0 then last = r[1][1] end
  end
  local stats = false
  if want == '1' then
    stats = {redis.call('XLEN', s), redis.call('XPENDING', s, group)[1], redis.call('ZCARD', d), redis.call('HGETALL', c)}
  end
  return {fmt(now), fmt(next), last, moved, stats, fmt(lease), got}
end
`

// enqueueScript stores one message. KEYS: S D C dedup-key.
// ARGV: message, delay, ttl, dedup window in ms (empty for none), message ID.
// It returns the ID of the message a duplicate duplicates, or false.
var enqueueScript = redis.NewScript(common + `
if ARGV[4] ~= '' then
  local prev = redis.call('GET', KEYS[4])
  if prev then
    redis.call('HINCRBY', KEYS[3], 'duplicate', 1)
    return prev
  end
  redis.call('SET', KEYS[4], ARGV[5], 'PX', ARGV[4])
end
local now, delay, ttl = now_us(), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('HINCRBY', KEYS[3], 'enqueued', 1)
if delay > 0 then
  redis.call('ZADD', KEYS[2], fmt(now + delay), pack(0, 0, ttl, '', '', ARGV[1]))
else
  local x = 0
  if ttl > 0 then x = now + ttl end
  xadd(KEYS[1], ARGV[1], 0, 0, x, '', '')
end
return false
`)

// receiveScript leases what the XREADGROUP before it (in the same MULTI,
// see queue.run) read, then does the queue's housekeeping. KEYS: S D L C
// Q (the settings hash). ARGV: group, token (the consumer name the
// XREADGROUP read as; empty for housekeeping only), queue name, key prefix,
// want stats ('1').
//
// Leasing is O(1) per batch: the entries stay in the group's pending
// entries list under the consumer named after the token, and the lease set
// gets one member, the token, scored with the batch's expiry. Nothing of
// the entries passes through Lua. A read that found nothing leaves no
// consumer and no lease.
//
// Housekeeping: every expired token's pending entries count a failure and
// go back after the retry policy's delay, or to the dead-letter queue at
// max attempts; every due delayed message moves into the stream. Whoever
// runs it first does it, once: it is safe with any number of nodes. It
// looks at the first member of each sorted set and scans only when that
// one is due.
//
// It returns {now, next, last, moved, stats, lease, held}: next is when the
// next lease expires or delayed message is due (-1: none), last the
// stream's last entry ID (for a blocking wait on new entries), moved how
// many messages housekeeping put into the stream (worth reading at once),
// stats, when asked, {xlen, pending, delayed, hash}, and held 1 when the
// token's lease was written.
var receiveScript = redis.NewScript(common + `
return receive(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], now_us())
`)

// orphanScript gives a lease to every consumer of the group that holds
// pending entries, has none, and has been idle for longer than the
// queue's lease: entries read by an XREADGROUP whose lease script never
// ran (it failed with NOSCRIPT and the process died before running it
// again) or left by an older engine that read as one shared consumer. The
// lease it writes expires at once, so the next housekeeping counts one
// failure for each of their entries, as for any lapsed lease. KEYS: S L Q.
// ARGV: group. It returns how many consumers it leased.
var orphanScript = redis.NewScript(common + `
local s, l = KEYS[1], KEYS[2]
local lease = config(KEYS[3]).lease
local now = now_us()
local n = 0
for _, cs in ipairs(redis.call('XINFO', 'CONSUMERS', s, ARGV[1])) do
  local h = fields(cs)
  if tonumber(h.pending) > 0 and tonumber(h.idle) * 1000 > lease and not redis.call('ZSCORE', l, h.name) then
    redis.call('ZADD', l, fmt(now), h.name)
    n = n + 1
  end
end
return n
`)

// settleScript applies verdicts, any number in one call (a pipeline of
// scripts pays Lua's per-call cost for each), and may lease a batch read
// before it in the same MULTI. KEYS: S D L C Q. ARGV: group, queue name,
// key prefix, the token an XREADGROUP before it read as (empty for none:
// see queue.settleAndPrefetch) and want stats ('1', with a token), then for
// each batch lease: its token, the number k of its acks, the number n of
// its other verdicts, the k acked entry IDs (in stream order, each once:
// see queue.settleArgv), then for each other verdict the entry ID, the
// verdict (n, r, d, e for an entry whose TTL ran out before delivery, or u
// to give back a message leased ahead and never handed out, see
// queue.prefetch), the delay and the reason. It returns, per token, one
// value for all its acks, then one per other verdict: 0 when the lease is
// gone (expired or taken over), or the entry is not pending under it any
// more, 1 when applied. With a read's token it returns {that, the receive
// script's answer for the read}.
//
// A token's lease is one ZSCORE, and its acks, which need nothing of
// their entries, one XACK of all their IDs, passed on from ARGV as they
// are; only a nack, requeue or dead letter reads and rewrites its entry.
// One XPENDING summary after them gives the floor for deleting the acked
// entries (see drop), which tokens have nothing left pending, to be
// released (their consumer and lease member deleted), and whether the
// read's token holds entries, to be leased.
var settleScript = redis.NewScript(common + `
local s, d, l, c = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local group, name, prefix, rtoken = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now = now_us()
local cfg
local out, ranges, held_tokens, acked, nacked, expired = {}, {}, {}, 0, 0, 0
local i = 6
while i <= #ARGV do
  local token, k, n = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  i = i + 3
  local ok = held(l, token, now)
  if not ok then
    out[#out + 1] = 0
    for x = 1, n do out[#out + 1] = 0 end
  else
    held_tokens[#held_tokens + 1] = token
    out[#out + 1] = 1
    if k > 0 then
      for x = i, i + k - 1, 1000 do
        redis.call('XACK', s, group, unpack(ARGV, x, math.min(x + 999, i + k - 1)))
      end
      ranges[#ranges + 1] = i
      ranges[#ranges + 1] = i + k - 1
      acked = acked + k
    end
  end
  i = i + k
  for x = 1, n do
    local sid, verdict, delay, reason = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3]
    i = i + 4
    local h = ok and take(s, group, sid)
    if not h then
      if ok then out[#out + 1] = 0 end
    else
      cfg = cfg or config(KEYS[5])
      local a, f = h.a + 1, h.f
      if verdict == 'n' then
        f = f + 1
        nacked = nacked + 1
        if cfg.maxa > 0 and f >= cfg.maxa then
          deadletter(c, cfg, prefix, h.m, a, f, reason, name)
        else
          reenter(s, d, now, delay, h.m, a, f, h.r, h.o)
        end
      elseif verdict == 'r' then
        reenter(s, d, now, delay, h.m, a, f, h.r, h.o)
      elseif verdict == 'u' then
        -- Leased ahead and never handed out: back as it was, no attempt.
        xadd(s, h.m, h.a, h.f, tonumber(h.x or '0'), h.r, h.o)
      elseif verdict == 'e' then
        expired = expired + 1
      else
        deadletter(c, cfg, prefix, h.m, a, f, reason, name)
      end
      out[#out + 1] = 1
    end
  end
end
local busy
if #held_tokens > 0 or rtoken ~= '' then
  local p
  p, busy = pendingof(s, group)
  release(s, l, group, held_tokens, busy)
  if acked > 0 then
    drop(s, group, ranges, p)
    redis.call('HINCRBY', c, 'acked', acked)
  end
end
if nacked > 0 then redis.call('HINCRBY', c, 'nacked', nacked) end
if expired > 0 then redis.call('HINCRBY', c, 'expired', expired) end
if rtoken ~= '' then
  local got = 0
  if busy[rtoken] then got = 1 end
  return {out, receive(s, d, l, c, KEYS[5], group, rtoken, name, prefix, ARGV[5], now, got, cfg)}
end
return out
`)

// extendScript moves a delivery's lease expiry to now+by. KEYS: S L.
// ARGV: group, token, entry ID, by. A batch lease covers every entry
// pending under its token, so an entry that shares its token with others
// first moves to a token of its own (token/ID, by XCLAIM): the others keep
// their expiry. It returns {expiry, token} with the delivery's token from
// now on, or {-1} when the lease is gone.
var extendScript = redis.NewScript(common + `
local s, l = KEYS[1], KEYS[2]
local group, token, sid = ARGV[1], ARGV[2], ARGV[3]
local now = now_us()
if not held(l, token, now) then return {'-1'} end
if #redis.call('XPENDING', s, group, sid, sid, 1, token) == 0 then return {'-1'} end
local at = now + tonumber(ARGV[4])
if #redis.call('XPENDING', s, group, '-', '+', 2, token) > 1 then
  local nt = token .. '/' .. sid
  redis.call('XCLAIM', s, group, nt, 0, sid, 'JUSTID')
  token = nt
end
redis.call('ZADD', l, fmt(at), token)
return {fmt(at), token}
`)

// purgeScript removes every ready and delayed message. KEYS: S D. ARGV:
// group, consumer. Ready entries are read through the group (so the group
// moves past them) and deleted; leased ones stay with their holders.
var purgeScript = redis.NewScript(`
local n = redis.call('ZCARD', KEYS[2])
redis.call('DEL', KEYS[2])
while true do
  local res = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', 1000, 'STREAMS', KEYS[1], '>')
  if not res or #res[1][2] == 0 then break end
  for _, e in ipairs(res[1][2]) do
    redis.call('XACK', KEYS[1], ARGV[1], e[1])
    redis.call('XDEL', KEYS[1], e[1])
    n = n + 1
  end
end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return n
`)

// redriveScript moves one dead letter back to its source queue. KEYS: S D
// of the dead-letter queue, the source's stream and stats. ARGV: group,
// 's' and an entry ID (a ready entry) or 'z' and a delayed member. A ready
// entry is one not pending in the group; it returns 1 when moved.
var redriveScript = redis.NewScript(common + `
local m
if ARGV[2] == 's' then
  if #redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1) > 0 then return 0 end
  local e = redis.call('XRANGE', KEYS[1], ARGV[3], ARGV[3])
  if #e == 0 then return 0 end
  m = fields(e[1][2]).m
  redis.call('XDEL', KEYS[1], ARGV[3])
else
  if redis.call('ZREM', KEYS[2], ARGV[3]) == 0 then return 0 end
  local _a, _f, _t, _r, _o
  _a, _f, _t, _r, _o, m = unpack_member(ARGV[3])
end
xadd(KEYS[3], m, 0, 0, 0, '', '')
redis.call('HINCRBY', KEYS[4], 'enqueued', 1)
return 1
`)
