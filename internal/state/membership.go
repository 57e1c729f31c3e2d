package state

import (
	"context"
	"encoding/binary"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cardguard/cardguard/internal/limits"
	"github.com/cardguard/cardguard/internal/tenant"
)

// Membership is the shared series membership: per tenant and generation, the
// set of series admitted or seen again in that generation, and the counts the
// limits are checked against (see the package documentation).
type Membership interface {
	// AdmitSeries decides about cands atomically, as limits.SeriesSharing's
	// AdmitShared describes, with the tenant's limits maxSeries and maxPerMetric
	// (0: none). With force every candidate is recorded, limits unchecked: the
	// publishing of refreshes and of admissions made while the backend was away.
	// Keys of generation gen expire at expireAt. It returns the tenant's active
	// series afterwards.
	AdmitSeries(ctx context.Context, t tenant.ID, gen int64, maxSeries, maxPerMetric int64, force bool, cands []limits.Candidate, expireAt time.Time) (int64, error)
	// SeriesCounts returns the active series of each tenant in gen.
	SeriesCounts(ctx context.Context, gen int64, ts []tenant.ID) ([]int64, error)
}

// Verdict codes of the admission script, one byte per candidate.
const (
	codeAdmitted     = '0'
	codeMaxSeries    = '1'
	codeMaxPerMetric = '2'
)

func reasonOf(code byte) limits.Reason {
	switch code {
	case codeMaxSeries:
		return limits.ReasonMaxSeries
	case codeMaxPerMetric:
		return limits.ReasonMaxSeriesPerMetric
	}
	return ""
}

// admitScript is the whole admission of one request's new series of one
// tenant, run by Redis as one atomic step: nothing else changes the tenant's
// membership between the checks and the additions, so concurrent requests on
// any replicas never push a tenant past its limits.
//
// KEYS: 1 members of gen, 2 members of gen-1, 3 per-metric members of gen,
// 4 per-metric members of gen-1, 5 series new in gen (per metric, "" total);
// all of one tenant's hash tag, so of one slot.
// ARGV: 1 max series, 2 max per metric (0 none), 3 expiry (Unix ms), 4 force
// ("1"), 5 number of metric names M, 6..5+M the names, then per candidate its
// hash (8 bytes) and its metric's index (1-based; 0 for none).
//
// Active series in gen are those of gen-1 plus those new in gen: SCARD of
// gen-1 plus the "" field of the new-series hash, and per metric the field of
// gen-1's per-metric hash plus that of the new-series hash.
//
// It returns the verdicts (one byte each, see the code constants) and the
// tenant's active series.
const admitScript = `
local maxS = tonumber(ARGV[1])
local maxM = tonumber(ARGV[2])
local exp = ARGV[3]
local force = ARGV[4] == '1'
local nm = tonumber(ARGV[5])
local base = 5 + nm
local n = (#ARGV - base) / 2
local hs = {}
for i = 1, n do hs[i] = ARGV[base + 2 * i - 1] end
local inCur, inPrev = {}, {}
for from = 1, n, 4000 do
  local to = math.min(from + 3999, n)
  local c = redis.call('SMISMEMBER', KEYS[1], unpack(hs, from, to))
  local p = redis.call('SMISMEMBER', KEYS[2], unpack(hs, from, to))
  for i = from, to do
    inCur[i] = c[i - from + 1]
    inPrev[i] = p[i - from + 1]
  end
end
local total = redis.call('SCARD', KEYS[2]) + (tonumber(redis.call('HGET', KEYS[5], '')) or 0)
local perMetric = {}
local function metricCount(name)
  local c = perMetric[name]
  if c == nil then
    c = (tonumber(redis.call('HGET', KEYS[4], name)) or 0) + (tonumber(redis.call('HGET', KEYS[5], name)) or 0)
    perMetric[name] = c
  end
  return c
end
local out = {}
local added = {}
local toAdd = {}
local addMetric = {}
local newMetric = {}
local newTotal = 0
local function bump(t, name)
  t[name] = (t[name] or 0) + 1
end
for i = 1, n do
  local h = hs[i]
  local mi = tonumber(ARGV[base + 2 * i])
  local name = nil
  if mi > 0 then name = ARGV[5 + mi] end
  local code = '0'
  if inCur[i] ~= 1 and not added[h] then
    if inPrev[i] ~= 1 and not force then
      if maxS > 0 and total >= maxS then
        code = '1'
      elseif maxM > 0 and name and metricCount(name) >= maxM then
        code = '2'
      end
    end
    if code == '0' then
      added[h] = true
      toAdd[#toAdd + 1] = h
      if name then bump(addMetric, name) end
      if inPrev[i] ~= 1 then
        total = total + 1
        newTotal = newTotal + 1
        if name then
          bump(newMetric, name)
          if perMetric[name] ~= nil then perMetric[name] = perMetric[name] + 1 end
        end
      end
    end
  end
  out[i] = code
end
if #toAdd > 0 then
  for from = 1, #toAdd, 4000 do
    redis.call('SADD', KEYS[1], unpack(toAdd, from, math.min(from + 3999, #toAdd)))
  end
  for name, c in pairs(addMetric) do redis.call('HINCRBY', KEYS[3], name, c) end
  for name, c in pairs(newMetric) do redis.call('HINCRBY', KEYS[5], name, c) end
  if newTotal > 0 then redis.call('HINCRBY', KEYS[5], '', newTotal) end
  redis.call('PEXPIREAT', KEYS[1], exp)
  redis.call('PEXPIREAT', KEYS[3], exp)
  redis.call('PEXPIREAT', KEYS[5], exp)
end
return {table.concat(out), total}
`

var admitLua = redis.NewScript(admitScript)

// membersKeys are the keys of t's membership in gen, under one hash tag.
func (r *Redis) membersKeys(t tenant.ID, gen int64) []string {
	tag := r.prefix + "members:{" + t.String() + "}:"
	g, p := strconv.FormatInt(gen, 10), strconv.FormatInt(gen-1, 10)
	return []string{tag + g, tag + p, tag + g + ":metrics", tag + p + ":metrics", tag + g + ":new"}
}

// maxScriptCandidates bounds one script call, so that Redis, which runs
// nothing else meanwhile, is never held for long.
const maxScriptCandidates = 20_000

// AdmitSeries implements Membership with admitScript, in calls of at most
// maxScriptCandidates series.
func (r *Redis) AdmitSeries(ctx context.Context, t tenant.ID, gen int64, maxSeries, maxPerMetric int64, force bool, cands []limits.Candidate, expireAt time.Time) (int64, error) {
	keys := r.membersKeys(t, gen)
	var active int64
	for len(cands) > 0 {
		chunk := cands[:min(len(cands), maxScriptCandidates)]
		cands = cands[len(chunk):]
		args, names := make([]any, 5, 5+2*len(chunk)+8), map[string]int{}
		forceArg := "0"
		if force {
			forceArg = "1"
		}
		args[0], args[1], args[2], args[3] = maxSeries, maxPerMetric, expireAt.UnixMilli(), forceArg
		var order []string
		for i := range chunk {
			if m := chunk[i].Metric; m != "" {
				if _, ok := names[m]; !ok {
					names[m] = len(names) + 1
					order = append(order, m)
				}
			}
		}
		args[4] = len(order)
		for _, m := range order {
			args = append(args, m)
		}
		for i := range chunk {
			var h [8]byte
			binary.BigEndian.PutUint64(h[:], chunk[i].Hash)
			args = append(args, string(h[:]), names[chunk[i].Metric])
		}
		res, err := admitLua.Run(ctx, r.c, keys, args...).Slice()
		if err != nil {
			return 0, err
		}
		codes, _ := res[0].(string)
		n, _ := res[1].(int64)
		if len(codes) != len(chunk) {
			return 0, errBadReply
		}
		for i := range chunk {
			chunk[i].Reason = reasonOf(codes[i])
		}
		active = n
	}
	return active, nil
}

// SeriesCounts implements Membership: SCARD of gen-1 and the new-series total
// of gen per tenant, in one pipeline.
func (r *Redis) SeriesCounts(ctx context.Context, gen int64, ts []tenant.ID) ([]int64, error) {
	if len(ts) == 0 {
		return nil, nil
	}
	p := r.c.Pipeline()
	cards := make([]*redis.IntCmd, len(ts))
	news := make([]*redis.StringCmd, len(ts))
	for i, t := range ts {
		k := r.membersKeys(t, gen)
		cards[i] = p.SCard(ctx, k[1])
		news[i] = p.HGet(ctx, k[4], "")
	}
	if _, err := p.Exec(ctx); err != nil && err != redis.Nil {
		return nil, err
	}
	out := make([]int64, len(ts))
	for i := range ts {
		n, _ := news[i].Int64()
		out[i] = cards[i].Val() + n
	}
	return out, nil
}
