# langgraph-warden default governance policy (policy input version 2).
#
# Query: data.warden.decision. Every rule below reads only `input` (the documented
# policy input, version 2: the step history as aggregates, so no rule iterates over
# earlier calls and a decision costs the same at any point of a thread) and
# optional configuration under `data.warden_config`:
#
#   {"warden_config": {"limits": {"per_tool": 20, "per_run": 100},
#                      "ttl_seconds": {"low": 300, "medium": 120, "high": 60}}}
#
# Decision: deny reasons win; otherwise approval reasons make the call need a
# human; otherwise it is allowed. Reasons are sorted, so engines can be compared.
# The Cedar twin of this file is default.cedar; tests check that both agree.
package warden

import rego.v1

default_limits := {"per_tool": 20, "per_run": 100}

default_ttl := {"low": 300, "medium": 120, "high": 60}

# Configuration is read by exact path: referring to `data` as a whole from inside
# package warden would make the decision depend on itself.
default limits := {}

limits := data.warden_config.limits

per_tool_limit := object.get(limits, "per_tool", default_limits.per_tool)

per_run_limit := object.get(limits, "per_run", default_limits.per_run)

default ttl_overrides := {}

ttl_overrides := data.warden_config.ttl_seconds

ttl_table := object.union(default_ttl, ttl_overrides)

# ---------------------------------------------------------------- deny reasons

# Written for input version 2: any other shape is refused, not half-read (a rate
# limit over fields that are absent would silently stop matching).
deny contains "policy_input_version_mismatch" if not input.version == 2

deny contains "unknown_tool" if not input.tool.known

deny contains "no_owner" if not has_owner

has_owner if {
	is_string(input.run.owner)
	input.run.owner != ""
}

# A run that declared which tools it may use is held to that list.
deny contains "outside_intent" if {
	is_array(input.run.allowed_tools)
	not input.tool.name in input.run.allowed_tools
}

# ...and to the data classes it declared.
deny contains "outside_intent" if {
	is_array(input.run.allowed_data_classes)
	some class in input.tool.data_classes
	not class in input.run.allowed_data_classes
}

# Rate limit from the history aggregates: calls that were not denied count
# (allowed + require_approval), per tool and for the run. The called tool's
# counters are read at their fixed path, input.history.tool (zero when the run has
# not called it), not looked up in input.history.tools: the engine is then handed
# that one entry, whatever the number of tools the run used.
calls_of_tool := input.history.tool.allowed + input.history.tool.require_approval

calls_in_run := input.history.run.allowed + input.history.run.require_approval

deny contains "rate_limited" if calls_of_tool >= per_tool_limit

deny contains "rate_limited" if calls_in_run >= per_run_limit

# Counts that cannot be read must not lift the limits.
deny contains "malformed_history" if not is_number(calls_of_tool)

deny contains "malformed_history" if not is_number(calls_in_run)

# ---------------------------------------------------------------- approval reasons

# Which triggers need a human comes from the run charter's tier profile
# (input.run.profile); without one: escalation, external sharing and irreversible
# actions always, plus sensitive data on high-risk runs.
default_triggers := {"escalates", "external", "irreversible"}

triggers := {t | some t in input.run.profile.require_approval_for} if is_object(input.run.profile)

triggers := default_triggers if {
	not is_object(input.run.profile)
	input.run.risk_tier != "high"
}

triggers := default_triggers | {"sensitive_data"} if {
	not is_object(input.run.profile)
	input.run.risk_tier == "high"
}

approval contains "irreversible" if {
	input.tool.irreversible
	"irreversible" in triggers
}

approval contains "external_sharing" if {
	input.tool.external
	"external" in triggers
}

approval contains "escalation" if {
	input.tool.escalates
	"escalates" in triggers
}

approval contains "sensitive_data" if {
	sensitive
	"sensitive_data" in triggers
}

sensitive if input.tool.sensitivity in {"confidential", "restricted"}

sensitive if count(input.tool.data_classes) > 0

# ---------------------------------------------------------------- decision

denied := sort(deny)

approvals_needed := sort(approval)

decision := {
	"allow": true,
	"require_approval": count(approvals_needed) > 0,
	"reasons": approvals_needed,
	"scopes": input.tool.scopes,
	"ttl_seconds": object.get(ttl_table, input.run.risk_tier, 60),
	"obligations": {"rate_limit": {"per_tool": per_tool_limit, "per_run": per_run_limit}},
} if count(denied) == 0

decision := {
	"allow": false,
	"require_approval": false,
	"reasons": denied,
	"scopes": [],
	"ttl_seconds": 0,
	"obligations": {},
} if count(denied) > 0
