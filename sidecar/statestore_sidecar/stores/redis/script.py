"""The Lua script every `state.redis` write runs (also run by the benchmark's direct path)."""

import hashlib

# One script for every write. KEYS: one per operation, in order. ARGV: five per operation:
# kind ("S" set, "D" delete), etag ("" for none), first-write ("1"/"0"), TTL in ms ("0" for none),
# value. Returns {0, 0} when applied, {1, i} on an etag mismatch at operation i (1-based),
# {2, i} when first-write found operation i's key present. Nothing is written unless all pass.
WRITE_SCRIPT = """
pcall(redis.replicate_commands)
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now_ms = math.floor(now_us / 1000)
local state = {}
local versions = {}
for i = 1, #KEYS do
  local key = KEYS[i]
  local base = (i - 1) * 5
  local kind, etag, fw = ARGV[base + 1], ARGV[base + 2], ARGV[base + 3]
  local s = state[key]
  if s == nil then
    local v = redis.call('HGET', key, 'version')
    if v then s = {true, v} else s = {false, nil} end
  end
  if etag ~= '' then
    if not s[1] or s[2] ~= etag then return {1, i} end
  elseif kind == 'S' and fw == '1' and s[1] then
    return {2, i}
  end
  if kind == 'S' then
    local nv = now_us
    local old = s[1] and tonumber(s[2]) or nil
    if old ~= nil and old >= nv then nv = old + 1 end
    versions[i] = string.format('%.0f', nv)
    state[key] = {true, versions[i]}
  else
    state[key] = {false, nil}
  end
end
for i = 1, #KEYS do
  local key = KEYS[i]
  local base = (i - 1) * 5
  redis.call('DEL', key)
  if ARGV[base + 1] == 'S' then
    local ttl = tonumber(ARGV[base + 4])
    if ttl > 0 then
      redis.call('HSET', key, 'data', ARGV[base + 5], 'version', versions[i])
      redis.call('PEXPIREAT', key, now_ms + ttl)
    else
      redis.call('HSET', key, 'data', ARGV[base + 5], 'version', versions[i])
    end
  end
end
return {0, 0}
"""

WRITE_SCRIPT_SHA = hashlib.sha1(WRITE_SCRIPT.encode()).hexdigest()  # what EVALSHA names it by
