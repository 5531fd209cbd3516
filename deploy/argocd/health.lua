-- Argo CD health check for every kind of accessplane.io (Lua 5.1; Argo CD opens only
-- the base, table and os libraries, so no string.* functions here).
-- Healthy / Progressing / Degraded from the Ready and Synced conditions, gated on
-- observedGeneration so a spec change never shows the previous generation's health.
hs = {}

local function condition(conditions, type)
  for _, c in ipairs(conditions or {}) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local function text(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  if c ~= nil and c.reason ~= nil and c.reason ~= "" then
    return c.reason
  end
  return fallback
end

local function is_false(c)
  return c ~= nil and c.status == "False"
end

-- Ready=False reasons that need a person: the operator will not fix them by retrying.
-- (Also when a later transient failure leaves Ready as it was and Synced retrying.)
local needs_user = {
  Drifted = true,              -- Observe policy: upstream differs and is never written to
  NotFound = true,             -- the adopted externalId does not exist upstream
  UpstreamRejected = true,     -- the upstream rejected the spec (400/409/422)
  PermissionDenied = true,     -- the upstream answered 403
  ToolNotApproved = true,      -- McpToolset: a named tool is not approved
  ToolNotFound = true,         -- McpToolset: a named tool does not exist
  Refused = true,              -- the operator refuses (e.g. an object built into the SaaS)
  CreateAmbiguous = true,      -- several upstream objects match an interrupted create
  SecretNotFound = true,       -- Connection
  SecretKeyMissing = true,     -- Connection
  SecretKeyInvalid = true,     -- Connection
  AuthenticationFailed = true, -- Connection
  InvalidSpec = true,          -- Connection
  NamespacedConnectionsDisabled = true, -- Connection under secrets scope credentialsNamespace
  ConnectionNotAllowed = true, -- the ClusterConnection does not allow the namespace
}

local generation = obj.metadata.generation
local status = obj.status or {}
local ready = condition(status.conditions, "Ready")
local synced = condition(status.conditions, "Synced")

if obj.metadata.deletionTimestamp ~= nil then
  hs.status = "Progressing"
  hs.message = "Deleting"
  if is_false(synced) then
    hs.message = "Deleting: " .. text(synced, "")
  end
  return hs
end

if status.conditions == nil or (ready == nil and synced == nil) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator"
  return hs
end

local function stale(observed)
  return generation ~= nil and observed ~= nil and observed < generation
end

local function waiting()
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. generation
  if is_false(synced) then
    hs.message = hs.message .. ": " .. text(synced, "")
  end
  return hs
end

-- The operator has not looked at this spec yet.
if stale(status.observedGeneration) then
  return waiting()
end

if is_false(synced) and (synced.reason == "TerminalError" or synced.reason == "CreateAmbiguous") then
  hs.status = "Degraded"
  hs.message = text(synced, "Synced=False")
  return hs
end

-- Looked at, but Ready still describes an older generation (e.g. a retried write).
if ready ~= nil and stale(ready.observedGeneration) then
  return waiting()
end

if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = text(ready, "Ready")
  if is_false(synced) then
    -- A passing upstream fault during a resync: the object was fine when last seen.
    hs.message = hs.message .. " (last sync failed, retrying: " .. text(synced, "") .. ")"
  end
  return hs
end

if ready ~= nil and needs_user[ready.reason] then
  hs.status = "Degraded"
  hs.message = text(ready, "Ready=False")
  return hs
end

-- Creating, Updating, Pending, WaitingForDependency, DependencyFailed, Unreachable,
-- retried errors...
hs.status = "Progressing"
if ready ~= nil and ready.reason == "Error" and is_false(synced) then
  hs.message = text(synced, "Error")
else
  hs.message = text(ready, text(synced, "Waiting for the operator"))
end
return hs
