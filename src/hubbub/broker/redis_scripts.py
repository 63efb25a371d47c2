"""The Lua scripts of the Redis engine: registry writes, routing, heartbeats and reaping.

Each registry write is one script call carrying many operations, so a batch applies
atomically and in order; every script builds its keys from the prefix it is given, with the
same names as :class:`hubbub.broker.channels.Names` (a test checks that they agree).

The scripts name their keys in ARGV rather than KEYS: they run on a standalone server (or a
single primary), not on Redis Cluster, where one batch would span slots.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

__all__ = ["SCRIPTS", "Script"]

_PRELUDE = r"""
local P = ARGV[1]
local K_NODES = P .. ':nodes'
local K_REAPING = P .. ':reaping'
local K_HUBS = P .. ':hubs'
local function k_owner(h) return P .. ':owner:' .. h end
local function k_conns(h) return P .. ':conns:' .. h end
local function k_user(h, u) return P .. ':user:' .. h .. ':' .. u end
local function k_group(h, g) return P .. ':group:' .. h .. ':' .. g end
local function k_cgroups(h, c) return P .. ':groups:' .. h .. ':' .. c end
local function k_held(m) return P .. ':held:' .. m end
local function k_session(h, c) return P .. ':session:' .. h .. ':' .. c end
local function k_frames(h, c) return P .. ':frames:' .. h .. ':' .. c end

-- An owner value is "node/epoch", then "\0" and the user id when the connection has one.
local function split_owner(v)
  local i = string.find(v, '\0', 1, true)
  if i then return string.sub(v, 1, i - 1), string.sub(v, i + 1) end
  return v, nil
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Remove a connection from every index (its groups, its user, its hub).
local function drop(h, c, user)
  local cg = k_cgroups(h, c)
  for _, g in ipairs(redis.call('SMEMBERS', cg)) do
    redis.call('ZREM', k_group(h, g), c)
  end
  redis.call('DEL', cg)
  redis.call('HDEL', k_owner(h), c)
  redis.call('ZREM', k_conns(h), c)
  if user then redis.call('ZREM', k_user(h, user), c) end
  if redis.call('EXISTS', k_conns(h)) == 0 then redis.call('ZREM', K_HUBS, h) end
end
"""

# ARGV: prefix, node, epoch, then operations of four arguments each:
#   a hub cid user   add (user: "" for none, "=" .. id), taking the connection over
#   A hub cid user   add unless another node holds it (re-registration after an outage)
#   r hub cid -      remove, if this incarnation holds it
#   j hub group cid  join, if this incarnation holds the connection
#   l hub group cid  leave, likewise
# Returns -1 when the epoch is no longer the node's (a late batch of an old incarnation),
# else the flat list hub, cid, hub, cid, ... of the "A" operations refused.
_WRITE = r"""
local node, epoch = ARGV[2], ARGV[3]
if redis.call('GET', P .. ':epoch:' .. node) ~= epoch then return -1 end
local me = node .. '/' .. epoch
local held = k_held(me)
local refused = {}
local function mine(h, c)
  local v = redis.call('HGET', k_owner(h), c)
  if not v then return false end
  return split_owner(v) == me
end
for i = 4, #ARGV, 4 do
  local op, h, a, b = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if op == 'a' or op == 'A' then
    local ok = true
    if op == 'A' then
      local v = redis.call('HGET', k_owner(h), a)
      if v and string.match(split_owner(v), '^([^/]*)/') ~= node then
        ok = false
        refused[#refused + 1] = h
        refused[#refused + 1] = a
      end
    end
    if ok then
      local value = me
      if b ~= '' then
        value = me .. '\0' .. string.sub(b, 2)
        redis.call('ZADD', k_user(h, string.sub(b, 2)), 0, a)
      end
      redis.call('HSET', k_owner(h), a, value)
      redis.call('ZADD', k_conns(h), 0, a)
      redis.call('SADD', held, h .. '\0' .. a)
      redis.call('ZADD', K_HUBS, 0, h)
    end
  elseif op == 'r' then
    local v = redis.call('HGET', k_owner(h), a)
    if v then
      local o, u = split_owner(v)
      if o == me then drop(h, a, u) end
    end
    redis.call('SREM', held, h .. '\0' .. a)
  elseif op == 'j' then
    if mine(h, b) then
      redis.call('ZADD', k_group(h, a), 0, b)
      redis.call('SADD', k_cgroups(h, b), a)
    end
  elseif op == 'l' then
    if mine(h, b) then
      redis.call('ZREM', k_group(h, a), b)
      redis.call('SREM', k_cgroups(h, b), a)
    end
  end
end
return refused
"""

# ARGV: prefix, node, epoch, ttl ms, previous member ("" for none). The incarnation is
# announced alive; a previous incarnation of the node is handed to the reapers.
_ANNOUNCE = r"""
local member = ARGV[2] .. '/' .. ARGV[3]
redis.call('ZADD', K_NODES, now_ms() + tonumber(ARGV[4]), member)
local old = ARGV[5]
if old ~= '' and old ~= member then
  redis.call('ZREM', K_NODES, old)
  if redis.call('EXISTS', k_held(old)) == 1 then redis.call('SADD', K_REAPING, old) end
end
return 1
"""

# ARGV: prefix, member, ttl ms. Refreshes the member (if it is still registered and its time
# has not run out), hands the members whose time ran out to the reapers.
# Returns {alive 0/1, live members, some members to reap}.
_BEAT = r"""
local now = now_ms()
local alive = 0
local expiry = redis.call('ZSCORE', K_NODES, ARGV[2])
if expiry and tonumber(expiry) > now then  -- past its expiry it is dead, even if unclaimed
  alive = 1
  redis.call('ZADD', K_NODES, now + tonumber(ARGV[3]), ARGV[2])
end
for _, m in ipairs(redis.call('ZRANGEBYSCORE', K_NODES, '-inf', now, 'LIMIT', 0, 16)) do
  redis.call('ZREM', K_NODES, m)
  redis.call('SADD', K_REAPING, m)
end
return {alive, redis.call('ZRANGE', K_NODES, 0, -1), redis.call('SRANDMEMBER', K_REAPING, 8)}
"""

# ARGV: prefix, member, batch size, session ttl ms. Removes up to a batch of the connections a
# dead (or superseded) incarnation held, unless another incarnation holds them now; their
# replicated sessions expire after the session timeout. Returns how many are left.
_REAP = r"""
local member = ARGV[2]
local held = k_held(member)
local ttl = tonumber(ARGV[4])
for _, e in ipairs(redis.call('SPOP', held, tonumber(ARGV[3]))) do
  local i = string.find(e, '\0', 1, true)
  local h, c = string.sub(e, 1, i - 1), string.sub(e, i + 1)
  local v = redis.call('HGET', k_owner(h), c)
  if v then
    local o, u = split_owner(v)
    if o == member then
      drop(h, c, u)
      if ttl > 0 then
        redis.call('PEXPIRE', k_session(h, c), ttl)
        redis.call('PEXPIRE', k_frames(h, c), ttl)
      end
    end
  end
end
local left = redis.call('SCARD', held)
if left == 0 then redis.call('SREM', K_REAPING, member) end
return left
"""

# ARGV: prefix, node, epoch. A graceful leave: the incarnation is reaped at once.
_LEAVE = r"""
local member = ARGV[2] .. '/' .. ARGV[3]
redis.call('ZREM', K_NODES, member)
if redis.call('GET', P .. ':epoch:' .. ARGV[2]) == ARGV[3] then
  redis.call('DEL', P .. ':epoch:' .. ARGV[2])
end
if redis.call('EXISTS', k_held(member)) == 1 then redis.call('SADD', K_REAPING, member) end
return 1
"""

# ARGV: prefix, hub, cid, this node, "1" for sharded pub/sub, message. Publishes the message
# on the channel of the node holding the connection. Returns -1: nobody holds it; -2: this
# node does (nothing published); else the number of receivers (0: the owner is not listening).
_ROUTE = r"""
local v = redis.call('HGET', k_owner(ARGV[2]), ARGV[3])
if not v then return -1 end
local node = string.match(split_owner(v), '^([^/]*)/')
if node == ARGV[4] then return -2 end
local channel = P .. ':to:node:' .. node
if ARGV[5] == '1' then return redis.call('SPUBLISH', channel, ARGV[6]) end
return redis.call('PUBLISH', channel, ARGV[6])
"""

# ARGV: prefix, "1" for sharded pub/sub, then channel and message pairs: publications queued
# back to back, published in order with one reply for all (reading a reply per publication
# cost the node more than the publication itself).
_PUBLISH = r"""
local command = 'PUBLISH'
if ARGV[2] == '1' then command = 'SPUBLISH' end
for i = 3, #ARGV, 2 do redis.call(command, ARGV[i], ARGV[i + 1]) end
return 1
"""

# ARGV: prefix, hub, cid. The node id holding a connection, or false.
_OWNER = r"""
local v = redis.call('HGET', k_owner(ARGV[2]), ARGV[3])
if not v then return false end
return string.match(split_owner(v), '^([^/]*)/')
"""

# ARGV: prefix, index key, owners key, after ("" for the start), limit. Members of a sorted set
# of connection ids, in id order after ``after``, each with "=" .. user id or "" (no user).
_PAGE = r"""
local min = '-'
if ARGV[4] ~= '' then min = '(' .. ARGV[4] end
local ids = redis.call('ZRANGEBYLEX', ARGV[2], min, '+', 'LIMIT', 0, tonumber(ARGV[5]))
local out = {}
if #ids == 0 then return out end
local values = redis.call('HMGET', ARGV[3], unpack(ids))
for i, id in ipairs(ids) do
  local v = values[i]
  if v then
    local _, user = split_owner(v)
    out[#out + 1] = id
    if user then out[#out + 1] = '=' .. user else out[#out + 1] = '' end
  end
end
return out
"""

# ARGV: prefix, then operations of five arguments each (hub, cid and two more):
#   s hub cid snapshot -   store the snapshot            p hub cid seq frame  push a frame
#   t hub cid seq -        trim frames before seq       e hub cid ms -       expire in ms
#   k hub cid - -          keep (no expiry)             d hub cid - -        delete
# and one of variable length, a message of a group fan-out pushed to K members at once:
#   g hub message offset K cid1 first1 ... cidK firstK   (sequence id = first + offset)
_SESSIONS = r"""
local i = 2
while i <= #ARGV do
  local op, h, c, a, b = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  if op == 'g' then
    local offset = tonumber(a)
    local last = i + 4 + 2 * tonumber(b)
    for j = i + 5, last, 2 do
      redis.call('XADD', k_frames(h, ARGV[j]), (tonumber(ARGV[j + 1]) + offset) .. '-0', 'd', c)
    end
    i = last + 1
  else
    if op == 'p' then
      redis.call('XADD', k_frames(h, c), a .. '-0', 'f', b)
    elseif op == 't' then
      redis.call('XTRIM', k_frames(h, c), 'MINID', a .. '-0')
    elseif op == 's' then
      redis.call('SET', k_session(h, c), a)
    elseif op == 'e' then
      redis.call('PEXPIRE', k_session(h, c), a)
      redis.call('PEXPIRE', k_frames(h, c), a)
    elseif op == 'k' then
      redis.call('PERSIST', k_session(h, c))
      redis.call('PERSIST', k_frames(h, c))
    elseif op == 'd' then
      redis.call('DEL', k_session(h, c), k_frames(h, c))
    end
    i = i + 5
  end
end
return 1
"""

# ARGV: prefix, hub, cid. Atomically takes a replicated session: {meta or false, last id,
# frames...} where frames are triples of stream id, field ("f": a frame; "d": a message to
# build the frame of with the sequence id) and its bytes; the keys are deleted.
_TAKE_SESSION = r"""
local ks, kf = k_session(ARGV[2], ARGV[3]), k_frames(ARGV[2], ARGV[3])
local meta = redis.call('GET', ks)
if not meta then
  redis.call('DEL', kf)
  return {false}
end
-- The stream's last id: the last sequence id taken, also when every frame was acked.
local last = '0-0'
if redis.call('EXISTS', kf) == 1 then
  local info = redis.call('XINFO', 'STREAM', kf)
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then last = info[i + 1] end
  end
end
local out = {meta, last}
for _, entry in ipairs(redis.call('XRANGE', kf, '-', '+')) do
  out[#out + 1] = entry[1]
  out[#out + 1] = entry[2][1]
  out[#out + 1] = entry[2][2]
end
redis.call('DEL', ks, kf)
return out
"""


@dataclass(frozen=True)
class Script:
    """A script's text and SHA1 (what EVALSHA names it by)."""

    name: str
    text: str

    @property
    def sha(self) -> str:
        return hashlib.sha1(self.text.encode()).hexdigest()


def _script(name: str, body: str) -> Script:
    return Script(name, _PRELUDE + body)


class _Scripts:
    write = _script("write", _WRITE)
    announce = _script("announce", _ANNOUNCE)
    beat = _script("beat", _BEAT)
    reap = _script("reap", _REAP)
    leave = _script("leave", _LEAVE)
    route = _script("route", _ROUTE)
    publish = _script("publish", _PUBLISH)
    owner = _script("owner", _OWNER)
    page = _script("page", _PAGE)
    take_session = _script("take_session", _TAKE_SESSION)
    sessions = _script("sessions", _SESSIONS)

    def all(self) -> tuple[Script, ...]:
        return (
            self.write,
            self.announce,
            self.beat,
            self.reap,
            self.leave,
            self.route,
            self.publish,
            self.owner,
            self.page,
            self.take_session,
            self.sessions,
        )


SCRIPTS = _Scripts()
