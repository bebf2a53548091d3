-- wrk script for bench/verify.py.
--
--   wrk -t T -c C -d Ds -s bench/wrk_verify.lua http://host:port -- MODE KEYS_FILE THREADS [check]
--
-- MODE "verify": POST /v1/verify, rotating through the keys in KEYS_FILE (one per line); each
-- wrk thread takes every THREADS-th key, so the threads together cycle through all of them.
-- MODE "bodies": the same, but each line of the file is a whole verify body (a key with its
-- request context, cost and tokens), for the fully loaded policy scenario.
-- The bearer token comes from the environment (KEYPLANE_BENCH_ROOT_KEY), not the command line.
-- MODE "healthz": GET /healthz, with the same script overhead so the two runs compare fairly.
-- "check" also reads every response body and counts verdicts that are not "valid": true.
--
-- done() prints one machine-readable line starting with KEYPLANE_BENCH (latencies in µs).

local threads = {}
local next_thread_id = 0

function setup(thread)
  thread:set("thread_id", next_thread_id)
  next_thread_id = next_thread_id + 1
  table.insert(threads, thread)
end

local prepared = {}
local position = 0
checked = 0
invalid = 0

local function check_response(status, headers, body)
  checked = checked + 1
  if status ~= 200 or not string.find(body, '"valid": true', 1, true) then
    invalid = invalid + 1
  end
end

function init(args)
  local mode, keys_file, thread_count = args[1], args[2], tonumber(args[3])
  if mode == "healthz" then
    prepared[1] = wrk.format("GET", "/healthz")
  else
    local headers = {
      ["Content-Type"] = "application/json",
      ["Authorization"] = "Bearer " .. os.getenv("KEYPLANE_BENCH_ROOT_KEY"),
    }
    local index = 0
    for line in io.lines(keys_file) do
      if line ~= "" then
        if index % thread_count == thread_id then
          -- "bodies": each line is a whole verify body; "verify": each line is a key.
          local body = line
          if mode == "verify" then
            body = '{"key": "' .. line .. '"}'
          end
          table.insert(prepared, wrk.format("POST", "/v1/verify", headers, body))
        end
        index = index + 1
      end
    end
  end
  if args[4] == "check" then
    response = check_response
  end
end

function request()
  position = position % #prepared + 1
  return prepared[position]
end

function done(summary, latency, requests)
  local total_checked, total_invalid = 0, 0
  for _, thread in ipairs(threads) do
    total_checked = total_checked + (thread:get("checked") or 0)
    total_invalid = total_invalid + (thread:get("invalid") or 0)
  end
  local errors = summary.errors
  io.write(string.format(
    "KEYPLANE_BENCH requests=%d duration_us=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d"
      .. " errors=%d checked=%d invalid=%d\n",
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    errors.connect + errors.read + errors.write + errors.status + errors.timeout,
    total_checked, total_invalid
  ))
end
