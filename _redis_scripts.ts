// The Lua scripts of the Redis-backed limiters in redis.ts, and the code that sends them.

import type { RedisScriptClient } from "./redis.ts";

// Lua scripts. KEYS are always [grants or holders, queue, deadlines, tickets]:
// - KEYS[1]: a sorted set of granted members. A semaphore scores each by its lease expiry, a rate
//   limiter by its grant time.
// - KEYS[2]: the waiting members, scored by a ticket from KEYS[4], so lower scores came first.
// - KEYS[3]: the same waiting members, scored by the time after which a waiter that stopped
//   polling is dropped.
// Members are "<random id>:<weight>". Times are microseconds of the Redis server's clock.

const LUA_HELPERS = `
local function now_us()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000000 + tonumber(time[2])
end

local function weight_of(member)
  return tonumber(string.match(member, ':(%d+)$'))
end

local function total_weight(key)
  local total = 0
  for _, member in ipairs(redis.call('ZRANGE', key, 0, -1)) do
    total = total + weight_of(member)
  end
  return total
end

local function drop_stale_waiters(now)
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)) do
    redis.call('ZREM', KEYS[2], member)
    redis.call('ZREM', KEYS[3], member)
  end
end

-- The units left for member once the grants and every waiter queued before it are counted. A
-- member that is not queued is counted as the last in line. Each waiter takes at least one unit,
-- so looking at the first 'capacity' waiters is enough to know whether member fits.
local function units_left_for(member, capacity, weight)
  local left = capacity - total_weight(KEYS[1])
  for _, other in ipairs(redis.call('ZRANGE', KEYS[2], 0, capacity - 1)) do
    if other == member or left < weight then break end
    left = left - weight_of(other)
  end
  return left
end

-- Sets every key to expire once the last grant (its score plus grant_extra) and the last waiter
-- deadline have passed, so that the keys of an idle limiter disappear.
local function set_expiry(grant_extra)
  local latest = 0
  local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  if last[2] then latest = tonumber(last[2]) + grant_extra end
  last = redis.call('ZRANGE', KEYS[3], -1, -1, 'WITHSCORES')
  if last[2] and tonumber(last[2]) > latest then latest = tonumber(last[2]) end
  if latest == 0 then
    redis.call('DEL', KEYS[4])
    return
  end
  local at = math.floor(latest / 1000) + 2
  for i = 1, 4 do redis.call('PEXPIREAT', KEYS[i], at) end
end

-- Queues member (or refreshes its deadline when it is queued already).
local function wait_in_queue(member, queued, now, lease)
  if not queued then redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[4]), member) end
  redis.call('ZADD', KEYS[3], now + lease, member)
end
`;

// ARGV: member, weight, permits, lease in µs, "1" on the request's first call.
// Returns {1, lease expiry} when granted, {0, 0} when queued, {-1, 0} when the member was waiting
// but is no longer in the queue.
const SEMAPHORE_ACQUIRE = `${LUA_HELPERS}
local member, weight, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[4])
local now = now_us()
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
drop_stale_waiters(now)

local held = redis.call('ZSCORE', KEYS[1], member)
if held then return {1, tonumber(held)} end
local queued = redis.call('ZSCORE', KEYS[2], member)
if not queued and ARGV[5] ~= '1' then return {-1, 0} end

if units_left_for(member, tonumber(ARGV[3]), weight) >= weight then
  redis.call('ZREM', KEYS[2], member)
  redis.call('ZREM', KEYS[3], member)
  redis.call('ZADD', KEYS[1], now + lease, member)
  set_expiry(0)
  return {1, now + lease}
end
wait_in_queue(member, queued, now, lease)
set_expiry(0)
return {0, 0}
`;

// ARGV: member, lease in µs. Returns the new lease expiry, or 0 when the member holds no lease.
const SEMAPHORE_RENEW = `${LUA_HELPERS}
local now = now_us()
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
set_expiry(0)
return now + tonumber(ARGV[2])
`;

// ARGV: member. Removes it from the grants and the queue, and returns 1 when it held a grant. This
// releases a semaphore permit, and cancels a waiter of either kind together with a grant that the
// waiter never received.
const REMOVE_MEMBER = `
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return removed
`;

// ARGV: member, weight, limit, interval in µs, waiter lease in µs, "1" on the request's first call.
// Returns {1, grant time} when granted, {0, µs until enough grants leave the window} when queued,
// {-1, 0} when the member was waiting but is no longer in the queue.
const RATE_ACQUIRE = `${LUA_HELPERS}
local member, weight, interval = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[4])
local now = now_us()
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - interval)
drop_stale_waiters(now)

local granted = redis.call('ZSCORE', KEYS[1], member)
if granted then return {1, tonumber(granted)} end
local queued = redis.call('ZSCORE', KEYS[2], member)
if not queued and ARGV[6] ~= '1' then return {-1, 0} end

local left = units_left_for(member, tonumber(ARGV[3]), weight)
if left >= weight then
  redis.call('ZREM', KEYS[2], member)
  redis.call('ZREM', KEYS[3], member)
  redis.call('ZADD', KEYS[1], now, member)
  set_expiry(interval)
  return {1, now}
end
wait_in_queue(member, queued, now, tonumber(ARGV[5]))
set_expiry(interval)

local missing = weight - left
local grants = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #grants, 2 do
  missing = missing - weight_of(grants[i])
  if missing <= 0 then return {0, tonumber(grants[i + 1]) + interval - now} end
end
return {0, interval}
`;

/** A script's source, and its SHA-1 digest once computed. */
export interface LuaScript {
  readonly source: string;
  sha1: string | undefined;
  digest: Promise<string> | undefined;
}

function luaScript(source: string): LuaScript {
  return { source, sha1: undefined, digest: undefined };
}

export const semaphoreAcquire: LuaScript = luaScript(SEMAPHORE_ACQUIRE);
export const semaphoreRenew: LuaScript = luaScript(SEMAPHORE_RENEW);
export const removeMember: LuaScript = luaScript(REMOVE_MEMBER);
export const rateAcquire: LuaScript = luaScript(RATE_ACQUIRE);

async function sha1Hex(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-1", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest), (byte) => byte.toString(16).padStart(2, "0")).join("");
}

function isNoScriptError(error: unknown): boolean {
  return error instanceof Error && error.message.startsWith("NOSCRIPT");
}

/**
 * Sends the script by digest and falls back to the full source when Redis does not have it
 * cached, which happens on first use and after a restart. Once the digest is known, EVALSHA is
 * sent synchronously, and before that every call waits for the same digest promise, so calls made
 * in order reach a single connection in order.
 */
export async function runScript(
  client: RedisScriptClient,
  script: LuaScript,
  keys: readonly string[],
  args: readonly string[],
): Promise<unknown> {
  if (script.sha1 === undefined) {
    script.digest ??= sha1Hex(script.source);
    script.sha1 = await script.digest;
  }
  try {
    return await client.evalsha(script.sha1, keys.length, ...keys, ...args);
  } catch (error) {
    if (!isNoScriptError(error)) throw error;
    return await client.eval(script.source, keys.length, ...keys, ...args);
  }
}

/** Reads a script's {status, value} reply, which Redis returns as two integers. */
export function readPair(reply: unknown): [number, number] {
  if (Array.isArray(reply) && reply.length === 2) {
    const [status, value] = reply.map(Number) as [number, number];
    if (Number.isInteger(status) && Number.isFinite(value)) return [status, value];
  }
  throw new TypeError(`Redis returned an unexpected script reply: ${JSON.stringify(reply)}`);
}
