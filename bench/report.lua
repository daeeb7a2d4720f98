-- wrk script for bench/run: prints one machine-readable line at the end ("BENCH_JSON {...}").
-- With BENCH_COUNT_STATUS=1 in the environment it also counts responses by status class (2xx vs
-- everything else) per thread. Defining response() makes wrk hand every response to Lua, which
-- costs a little throughput, so the throughput runs leave it off (wrk then only knows
-- "status > 399" as errors.status) and the reload/latency runs turn it on.

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   non2xx = 0
   ok2xx = 0
end

local counting = os.getenv("BENCH_COUNT_STATUS") == "1"

if counting then
   function response(status, headers, body)
      if status >= 200 and status < 300 then
         ok2xx = ok2xx + 1
      else
         non2xx = non2xx + 1
      end
   end
end

function done(summary, latency, requests)
   local n_bad, n_ok = -1, -1  -- -1: not counted
   if counting then
      n_bad, n_ok = 0, 0
      for _, t in ipairs(threads) do
         n_bad = n_bad + t:get("non2xx")
         n_ok = n_ok + t:get("ok2xx")
      end
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH_JSON {"duration_us":%d,"requests":%d,"bytes":%d,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"ok2xx":%d,"non2xx":%d,' ..
      '"latency_us":{"min":%d,"mean":%.1f,"max":%d,"stdev":%.1f,' ..
      '"p50":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
      summary.duration, summary.requests, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      n_ok, n_bad,
      latency.min, latency.mean, latency.max, latency.stdev,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency:percentile(99.9)))
end
