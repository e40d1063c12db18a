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
// the lease set L (score: when the lease expires; member: the stream entry
// ID), the stats hash C and the settings hash Q, which Open writes so that
// every node, and a handle opened by name alone, applies the queue's
// latest settings. A stream entry's fields are m (the message, encoded by
// codec.go), a (attempts before this delivery), f (failures so far), x
// (when an undelivered entry's TTL runs out, 0 for none) and, for a dead
// letter, r and o (the reason and the source queue); an entry of m alone
// is a message with none of the others (attempts and failures 0, no TTL).
//
// Every delivery is a stream entry of its own: a message that comes back
// (nack, requeue, expired lease) is written as a new entry carrying its
// attempts and failures, and the old one is acknowledged and deleted. The
// entry ID is therefore the lease token: a stale holder's ID has no lease
// left, whoever holds the message now.

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
-- XREADGROUP hands to the receive script, and the script to Go, for a
-- quarter of the cost of all six; take reads a missing field as 0 or ''.
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
-- take removes a leased entry from stream s and returns its fields.
local function take(s, l, group, sid)
  redis.call('ZREM', l, sid)
  local e = redis.call('XRANGE', s, sid, sid)
  redis.call('XACK', s, group, sid)
  redis.call('XDEL', s, sid)
  if #e == 0 then return nil end
  local h = fields(e[1][2])
  h.a, h.f = tonumber(h.a or '0'), tonumber(h.f or '0')
  h.r, h.o = h.r or '', h.o or ''
  return h
end
-- drop deletes acknowledged entries ids from stream s. Every entry the
-- group delivered and nobody settled is pending (a lease and a pending
-- entry come and go together), every ready entry lies after the group's
-- last delivered ID, and settled entries are deleted: so every entry
-- before the floor (the lowest pending ID, or when none is pending the
-- ID after the last delivered one) is one of ids. One XTRIM MINID removes
-- those, walking the stream's head in order, for much less than XDEL
-- costs to find each; only the IDs at or after the floor (another
-- worker's older batch is still out) need XDEL.
local function idparts(id)
  local dash = string.find(id, '-', 1, true)
  return tonumber(string.sub(id, 1, dash - 1)), tonumber(string.sub(id, dash + 1))
end
local function drop(s, group, ids)
  local fms, fseq
  local p = redis.call('XPENDING', s, group)
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
  local rest, below = {}, 0
  for _, id in ipairs(ids) do
    local ms, seq = idparts(id)
    if fms and fseq < 2 ^ 53 and (ms < fms or (ms == fms and seq < fseq)) then
      below = below + 1
    else
      rest[#rest + 1] = id
    end
  end
  if below > 0 then
    redis.call('XTRIM', s, 'MINID', fmt(fms) .. '-' .. fmt(fseq))
  end
  for i = 1, #rest, 1000 do
    redis.call('XDEL', s, unpack(rest, i, math.min(i + 999, #rest)))
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

// receiveScript first does the queue's housekeeping, then leases. KEYS: S D
// L C Q (the settings hash). ARGV: group, consumer, count (0: housekeeping
// only), queue name, key prefix, want stats ('1').
//
// Housekeeping: every expired lease counts a failure and goes back after
// the retry policy's delay, or to the dead-letter queue at max attempts;
// every due delayed message moves into the stream. Whoever runs it first
// does it, once: it is safe with any number of nodes. It looks at the
// first member of each sorted set first and scans only when that one is
// due, so a receive with nothing due pays two ZRANGE calls for it.
//
// The leases of a batch are one variadic ZADD, and entries whose TTL ran
// out one XACK, one XDEL and one HINCRBY: a redis.call from Lua costs
// microseconds, so the script makes a fixed number of calls per batch, not
// some per message.
//
// It returns {now, next, last, entries, stats, lease}: next is when the
// next lease expires or delayed message is due (-1: none), last the
// stream's last entry ID (for a blocking wait on new entries), entries the
// leased entries as one flat list, three values each (ID, message, meta:
// empty for a fresh message, else "attempts failures #reason " .. reason ..
// source, see queue.entry), and stats, when asked, {xlen, leased,
// delayed, hash}.
var receiveScript = redis.NewScript(common + `
local s, d, l, c = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local cfg = config(KEYS[5])
local group, consumer, count, name, prefix = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
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
local now = now_us()
local function first_score(k)
  local f = redis.call('ZRANGE', k, 0, 0, 'WITHSCORES')
  if #f > 0 then return tonumber(f[2]) end
  return -1
end
local nl, nd = first_score(l), first_score(d)
if nl >= 0 and nl <= now then
  for _, sid in ipairs(redis.call('ZRANGEBYSCORE', l, '-inf', fmt(now), 'LIMIT', 0, 256)) do
    local h = take(s, l, group, sid)
    if h then
      redis.call('HINCRBY', c, 'expired_lease', 1)
      local a, f = h.a + 1, h.f + 1
      if maxa > 0 and f >= maxa then
        deadletter(c, cfg, prefix, h.m, a, f, 'lease expired (failure ' .. f .. ' of ' .. maxa .. ')', name)
      else
        reenter(s, d, now, backoff(f - 1), h.m, a, f, h.r, h.o)
      end
    end
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
  end
  nd = first_score(d)
end
local out = {}
if count > 0 then
  local res = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', count, 'STREAMS', s, '>')
  if res then
    local z, gone = {}, {}
    local score = fmt(now + lease)
    for _, e in ipairs(res[1][2]) do
      local v = e[2]
      if #v == 2 and v[1] == 'm' then
        -- A fresh message: nothing to check, and no meta.
        z[#z + 1] = score
        z[#z + 1] = e[1]
        local n = #out
        out[n + 1], out[n + 2], out[n + 3] = e[1], v[2], ''
      else
        local h = fields(v)
        local x = h.x or '0'
        if x ~= '0' and tonumber(x) <= now then
          gone[#gone + 1] = e[1]
        else
          z[#z + 1] = score
          z[#z + 1] = e[1]
          local r, o = h.r or '', h.o or ''
          local n = #out
          out[n + 1], out[n + 2] = e[1], h.m or ''
          out[n + 3] = (h.a or '0') .. ' ' .. (h.f or '0') .. ' ' .. #r .. ' ' .. r .. o
        end
      end
    end
    for i = 1, #z, 1000 do
      redis.call('ZADD', l, unpack(z, i, math.min(i + 999, #z)))
    end
    if #z > 0 and (nl < 0 or now + lease < nl) then nl = now + lease end
    if #gone > 0 then
      for i = 1, #gone, 500 do
        local j = math.min(i + 499, #gone)
        redis.call('XACK', s, group, unpack(gone, i, j))
        redis.call('XDEL', s, unpack(gone, i, j))
      end
      redis.call('HINCRBY', c, 'expired', #gone)
    end
  end
end
local next = nl
if nd >= 0 and (next < 0 or nd < next) then next = nd end
local last = '0-0'
if #out == 0 then
  local r = redis.call('XREVRANGE', s, '+', '-', 'COUNT', 1)
  if #r > 0 then last = r[1][1] end
end
local stats = false
if ARGV[6] == '1' then
  stats = {redis.call('XLEN', s), redis.call('ZCARD', l), redis.call('ZCARD', d), redis.call('HGETALL', c)}
end
return {fmt(now), fmt(next), last, out, stats, fmt(lease)}
`)

// settleScript applies verdicts, any number in one call (a pipeline of
// scripts pays Lua's per-call cost for each). KEYS: S D L C Q. ARGV:
// group, queue name, key prefix, the number k of acks, the k acked entry
// IDs, then for each other verdict the entry ID, the verdict (n, r, d, or
// u to give back a message leased ahead and never handed out, see
// queue.prefetch), the delay and the reason. It returns one value per verdict, acks first:
// 0 when the lease is gone (settled, expired or taken over, or the same
// entry named twice), 1 when applied.
//
// The leases are read with one ZMSCORE, and the acks, which need nothing
// of their entries, are one ZREM, one XACK and one XDEL of all their IDs;
// only a nack, requeue or dead letter reads and rewrites its entry.
var settleScript = redis.NewScript(common + `
local s, d, l, c = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local group, name, prefix, k = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local now = now_us()
local cfg
local out, acks, seen, nacked = {}, {}, {}, 0
local ids = {}
for i = 5, 4 + k do ids[#ids + 1] = ARGV[i] end
for i = 5 + k, #ARGV, 4 do ids[#ids + 1] = ARGV[i] end
local scores = {}
for i = 1, #ids, 1000 do
  local j = math.min(i + 999, #ids)
  local r = redis.call('ZMSCORE', l, unpack(ids, i, j))
  for x = 1, #r do scores[i + x - 1] = r[x] end
end
for n = 1, #ids do
  local sid, score = ids[n], scores[n]
  if seen[sid] or not score or tonumber(score) <= now then
    out[n] = 0
  elseif n <= k then
    seen[sid] = true
    acks[#acks + 1] = sid
    out[n] = 1
  else
    seen[sid] = true
    local h = take(s, l, group, sid)
    if not h then
      out[n] = 0
    else
      local i = 5 + k + 4 * (n - k - 1)
      local verdict, delay, reason = ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3]
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
      else
        deadletter(c, cfg, prefix, h.m, a, f, reason, name)
      end
      out[n] = 1
    end
  end
end
for i = 1, #acks, 1000 do
  local j = math.min(i + 999, #acks)
  redis.call('ZREM', l, unpack(acks, i, j))
  redis.call('XACK', s, group, unpack(acks, i, j))
end
if #acks > 0 then
  drop(s, group, acks)
  redis.call('HINCRBY', c, 'acked', #acks)
end
if nacked > 0 then redis.call('HINCRBY', c, 'nacked', nacked) end
return out
`)

// extendScript moves a lease's expiry to now+by. KEYS: L. ARGV: entry ID,
// by. It returns the new expiry, or -1 when the lease is gone.
var extendScript = redis.NewScript(common + `
local now = now_us()
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) <= now then return '-1' end
local at = now + tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], 'XX', fmt(at), ARGV[1])
return fmt(at)
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
return n
`)

// redriveScript moves one dead letter back to its source queue. KEYS: S D
// L of the dead-letter queue, the source's stream and stats. ARGV: 's' and
// an entry ID (a ready entry) or 'z' and a delayed member. A ready entry
// is one with no lease; it returns 1 when moved.
var redriveScript = redis.NewScript(common + `
local m
if ARGV[1] == 's' then
  if redis.call('ZSCORE', KEYS[3], ARGV[2]) then return 0 end
  local e = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
  if #e == 0 then return 0 end
  m = fields(e[1][2]).m
  redis.call('XDEL', KEYS[1], ARGV[2])
else
  if redis.call('ZREM', KEYS[2], ARGV[2]) == 0 then return 0 end
  local _a, _f, _t, _r, _o
  _a, _f, _t, _r, _o, m = unpack_member(ARGV[2])
end
xadd(KEYS[4], m, 0, 0, 0, '', '')
redis.call('HINCRBY', KEYS[5], 'enqueued', 1)
return 1
`)
