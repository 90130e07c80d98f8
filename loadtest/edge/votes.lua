-- wrk script for the edge benchmark: every request is a fresh viewer's vote.
--   wrk -t N -s votes.lua URL -- TOKENS_FILE BODY_FILE N
-- Thread k of N takes tokens k, k+N, k+2N, ... so no token is sent twice.
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end

function init(args)
  local nthreads = tonumber(args[3])
  tokens = {}
  local i = 0
  for line in io.lines(args[1]) do
    if i % nthreads == id then
      tokens[#tokens + 1] = line
    end
    i = i + 1
  end
  local f = io.open(args[2], "r")
  body = f:read("*a")
  f:close()
  next_token = 1
end

function request()
  local tok = tokens[next_token] or tokens[1] -- out of fresh viewers: a duplicate (non-2xx)
  next_token = next_token + 1
  return wrk.format("POST", "/api/v1/votes",
    {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. tok}, body)
end
