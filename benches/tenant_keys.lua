-- wrk script: each request carries the next API key of the file named after `--`
-- (one key per line, one tenant per key), round robin, each thread from its own
-- starting point. Usage: wrk -s benches/tenant_keys.lua URL -- keys.txt
local keys = {}
local next_key = 0

function init(args)
  for line in io.lines(args[1]) do
    if line ~= "" then
      keys[#keys + 1] = line
    end
  end
  assert(#keys > 0, "no keys in " .. args[1])
  next_key = math.random(#keys) - 1
end

function request()
  next_key = next_key % #keys + 1
  return wrk.format("GET", nil, { ["Authorization"] = "Bearer " .. keys[next_key] })
end
