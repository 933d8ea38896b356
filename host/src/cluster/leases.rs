//! Who plays which player: a lease per player in Redis (`cluster:lease:{id}` = "node
//! generation", expiring), a generation counter that grows with every new holder, the last
//! holder's name and the set of players the cluster looks after. Each step is one Lua script,
//! so two nodes can never both believe they took the same player.

use std::sync::LazyLock;

use redis::Script;

/// Takes a player's lease when nobody holds it (for a new player, or, with mode `adopt`, one
/// the cluster already looks after), or renews it when this node holds it. Answers
/// `{generation, other}`: generation 0 means someone else (`other`) holds it; otherwise
/// `other` is the previous holder.
pub static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local prefix, node, ttl, id, mode = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local lease = prefix .. 'cluster:lease:' .. id
local current = redis.call('GET', lease)
if current then
  local owner, generation = string.match(current, '^(.+) (%d+)$')
  if owner == node then
    redis.call('PEXPIRE', lease, ttl)
    return {generation, owner}
  end
  return {'0', owner or ''}
end
if mode == 'adopt' and redis.call('SISMEMBER', prefix .. 'cluster:players', id) == 0 then
  return {'0', ''}
end
local generation = redis.call('INCR', prefix .. 'cluster:generation:' .. id)
local previous = redis.call('GET', prefix .. 'cluster:owner:' .. id) or ''
redis.call('SET', lease, node .. ' ' .. generation, 'PX', ttl)
redis.call('SET', prefix .. 'cluster:owner:' .. id, node)
redis.call('SADD', prefix .. 'cluster:players', id)
return {tostring(generation), previous}
",
    )
});

/// Renews every lease this node holds (pairs of id and generation after the first three
/// arguments). A lease that expired while nobody took the player is taken again; one that
/// another node holds, or held meanwhile, is lost. Answers the lost ids.
pub static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local prefix, node, ttl = ARGV[1], ARGV[2], ARGV[3]
local lost = {}
for i = 4, #ARGV, 2 do
  local id, generation = ARGV[i], ARGV[i + 1]
  local lease = prefix .. 'cluster:lease:' .. id
  local mine = node .. ' ' .. generation
  local current = redis.call('GET', lease)
  if current == mine then
    redis.call('PEXPIRE', lease, ttl)
  elseif not current and redis.call('GET', prefix .. 'cluster:generation:' .. id) == generation then
    redis.call('SET', lease, mine, 'PX', ttl)
  else
    table.insert(lost, id)
  end
end
return lost
",
    )
});

/// Lets a player go for good (it was destroyed): its lease, last holder and place in the set,
/// if this node still holds it. Answers 1 when it did.
pub static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local prefix, node, id, generation = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local lease = prefix .. 'cluster:lease:' .. id
if redis.call('GET', lease) ~= node .. ' ' .. generation then
  return 0
end
redis.call('DEL', lease, prefix .. 'cluster:owner:' .. id)
redis.call('SREM', prefix .. 'cluster:players', id)
return 1
",
    )
});

/// Hands a player over from one node to another (a migration): when the lease is still the
/// giving node's at the given generation, the taking node holds it at a new generation.
/// Answers the new generation, or 0 when the lease had changed.
pub static HAND_OVER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local prefix, node, ttl, id, from, generation = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local lease = prefix .. 'cluster:lease:' .. id
if redis.call('GET', lease) ~= from .. ' ' .. generation then
  return 0
end
local next = redis.call('INCR', prefix .. 'cluster:generation:' .. id)
redis.call('SET', lease, node .. ' ' .. next, 'PX', ttl)
redis.call('SET', prefix .. 'cluster:owner:' .. id, node)
return next
",
    )
});
