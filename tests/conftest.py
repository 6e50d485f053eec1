"""Shared test setup. LiteLLM's offline switches are set before anything imports it.

Markers say what a test needs beyond Python, so `make check` can run the rest alone. They are
applied here from what a test uses, not written by hand on each test:

- pg: the PostgreSQL fixture in its fixture closure, or a parameter "postgresql" (ledger_url
  and the module-scoped BACKENDS fixtures are parametrized over backends);
- redis: a redis fixture in its closure, a parameter "redis" (cache fixtures that request
  `redis_url` lazily), or code that starts a redis-server itself;
- browser: code that drives Chromium (tests/ui/browser.py's `Browser`);
- model: the local model (its fixture, `LocalServer`, or the demo, which serves it);
- clients: tests/e2e and code that runs the npm clients (the MCP conformance suite);
- soak: tests/soak;
- slow: the tests measured at a second or more on the 2-core machine (`SLOW`), or 0.4 s or
  more (tests/slow_tests.txt), mostly
  subprocesses (the CLI, `llmgw mcp`, workers), large ledgers and real timeouts; `make check`
  leaves them out to stay under a minute.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import CodeType
from typing import Any

import pytest

from llmgw._litellm import set_offline_env

set_offline_env()

pytest_plugins = ["tests.fixtures.databases", "tests.fixtures.redis"]

TESTS = Path(__file__).resolve().parent

PG_FIXTURES = {"postgres_url"}
REDIS_FIXTURES = {"redis_url", "redis_servers"}
MODEL_FIXTURES = {"model_path"}
SLOW_FIXTURES = {"minilm"}  # loads the semantic cache's embedding model
# Names whose use in a test (or one of its fixtures) means it runs that outside dependency.
REDIS_NAMES = {"start_redis", "RedisServer"}
BROWSER_NAMES = {"Browser"}
MODEL_NAMES = {"LocalServer", "run_demo"}
CLIENT_NAMES = {"clients_problem", "require_clients", "conformance_bin", "node_script",
                "claude_code", "codex_exec"}
FOLDER_MARKS = {"e2e": "clients", "soak": "soak"}

# Measured with `--durations=0` (a test's setup + call + teardown, its slowest parameter):
# module under tests/ -> its slow test functions, or ALL of them. Re-measure when adding one.
ALL = frozenset({"*"})
# ... and those measured at 0.3 s or more, listed in tests/slow_tests.txt (path::function).
SLOW_LISTED = frozenset(
    line.strip() for line in (TESTS / "slow_tests.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#"))
SLOW: dict[str, frozenset[str] | set[str]] = {
    "budgets/test_budgets_gateway.py": {"test_200_concurrent_requests_never_overspend"},
    "budgets/test_budgets_processes.py": ALL,
    "budgets/test_late_settle.py": ALL,
    "budgets/test_session_budgets.py": {
        "test_50_concurrent_requests_of_one_run_never_overspend_its_cap",
    },
    "cache/test_semantic.py": {"test_minilm_embeds_offline_as_normalised_384_vectors"},
    "cli/test_budgets_cli.py": {
        "test_a_runs_cap_set_and_shown_by_session",
        "test_bad_amounts_and_targets_are_refused",
        "test_set_list_status_round_trip",
    },
    "cli/test_chat_cli.py": ALL,
    "cli/test_cli_imports.py": ALL,
    "cli/test_sim_cli.py": {
        "test_codex_style_tool_loop_over_the_responses_api",
        "test_sim_serves_until_sigterm_then_exits_cleanly",
        "test_tool_loop_and_plan_file_from_the_command_line",
    },
    "cli/test_usage_cli.py": {"test_by_session_json_and_csv_equal_plain_sql"},
    "cli/test_usage_cli_scale.py": ALL,
    "integration/test_attempts.py": {"test_retry_on_the_same_deployment_is_its_own_row"},
    "integration/test_auth_never_fails_over.py": {
        "test_a_fallback_into_a_refused_group_names_its_deployment",
        "test_bad_credentials_never_fail_over_on_any_later_request",
    },
    "integration/test_cache_gateway.py": {
        "test_never_across_projects_and_any_changed_parameter_misses",
        "test_semantic_hits_never_cross_projects",
        "test_semantic_paraphrase_hits_and_a_near_miss_does_not",
    },
    "integration/test_cancellation_matrix.py": {"test_a_cancelled_request_holds_nothing"},
    "integration/test_cost_truth.py": {
        "test_the_three_dialects_record_the_same_cost_for_the_same_usage",
    },
    "integration/test_demo_and_cli.py": ALL,
    "integration/test_fault_matrix.py": ALL,
    "integration/test_gateway.py": {"test_timeout_and_malformed_answers_are_typed"},
    "integration/test_health.py": {
        "test_completion_fallback_where_no_models_route",
        "test_cooling_down_comes_from_the_router",
        "test_health_command_json_end_to_end",
    },
    "integration/test_heap_freeze.py": ALL,
    "integration/test_messages_dialect.py": {"test_a_native_answer_is_what_anthropic_sent"},
    "integration/test_metrics.py": {"test_fallback_error_cache_hit_and_refusal_each_counted_once"},
    "integration/test_secrets_and_lifecycle.py": {
        "test_llmgw_chat_prints_a_refused_key_without_it",
        "test_no_api_key_in_ledger_logs_or_errors",
    },
    "integration/test_usage_explain.py": ALL,
    "ledger/test_key_limits_migration.py": ALL,
    "ledger/test_report.py": {"test_report_matches_python"},
    "ledger/test_report_scale.py": {
        "test_empty_ledger",
        "test_every_report_matches_plain_sql",
        "test_rows_written_one_request_at_a_time_and_before_0003",
    },
    "local/test_fetch.py": {"test_pip_failures_are_model_fetch_errors"},
    "mcp/test_http.py": {"test_keys_fix_identity_and_usage_scope"},
    "mcp/test_keys.py": {
        "test_stdio_refuses_a_revoked_key",
        "test_stdio_runs_as_the_api_keys_project_and_agent",
    },
    "mcp/test_stdio.py": ALL,
    "mcp/test_stdio_sigterm.py": ALL,
    "routing/test_circuit_breaker.py": {
        "test_allowed_fails_policy_counts_per_error_type",
        "test_open_cool_down_reopen_and_recover",
    },
    "routing/test_constraints.py": {"test_prefer_fastest_picks_the_faster_once_both_are_measured"},
    "routing/test_rate_limits.py": {
        "test_a_stream_holds_its_slot_until_it_ends",
        "test_max_parallel_is_never_exceeded_and_excess_calls_wait",
        "test_waiters_are_served_first_come_first_served",
    },
    "routing/test_strategies.py": {
        "test_latency_based_prefers_the_faster_after_warm_up",
        "test_simple_shuffle_follows_weights",
    },
    "scale/test_shared_router_state.py": ALL,
    "server/test_anthropic_api.py": {"test_errors_in_anthropic_shape"},
    "server/test_count_tokens.py": {"test_fields_llmgw_does_not_read_pass_through"},
    "server/test_hosts.py": {
        "test_allowed_hosts_and_origins_reach_the_fronts",
        "test_named_hosts_allowed_origins_and_cors_origins_are_accepted",
        "test_the_official_mcp_client_with_an_allowed_origin_works",
    },
    "server/test_key_limits.py": ALL,
    "server/test_keys.py": {"test_cli_create_prints_key_last_list_hides_it_revoke"},
    "server/test_lifecycle.py": {
        "test_a_hang_up_mid_stream_settles_every_dialect",
        "test_client_hanging_up_mid_stream_leaves_a_settled_partial_row",
        "test_sigterm_drains_in_flight_requests_then_cancels_the_rest",
    },
    "server/test_schema.py": ALL,
    "server/test_scoping.py": {"test_usage_is_scoped_to_the_keys_project_and_admin_reads_all"},
    "sim/test_faults.py": {"test_same_plan_same_requests_same_behaviour"},
    "sim/test_gemini_sim.py": {"test_litellm_ignores_timeout_on_gemini_streams"},
    "sim/test_openai_responses_sim.py": {"test_stream_faults_cut_after_n_events"},
    "unit/test_packaging.py": {"test_the_wheel_ships_every_file_of_the_package"},
    "unit/test_rates.py": {
        "test_llmgw_models_shows_every_rate_and_its_source_without_importing_litellm",
    },
    "unit/test_router_settings_check.py": {
        "test_llmgw_chat_with_a_bad_router_setting_prints_one_line",
    },
}


def _code_names(code: CodeType) -> Iterator[str]:
    """The global and attribute names a code object (and the functions nested in it) uses."""
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, CodeType):
            yield from _code_names(const)


def _names_used(item: pytest.Function) -> set[str]:
    """Names used by the test function and by every fixture function in its closure."""
    functions: list[Any] = [item.function]
    for defs in item._fixtureinfo.name2fixturedefs.values():
        functions += [d.func for d in defs]
    names: set[str] = set()
    for func in functions:
        code = getattr(getattr(func, "__wrapped__", func), "__code__", None)
        if code is not None:
            names.update(_code_names(code))
    return names


def _param_values(item: pytest.Function) -> set[Any]:
    callspec = getattr(item, "callspec", None)
    values = callspec.params.values() if callspec is not None else ()
    return {v for v in values if isinstance(v, str)}


def needs(item: pytest.Function) -> set[str]:
    """The markers of outside dependencies this test needs."""
    fixtures = set(item.fixturenames)
    names = _names_used(item)
    params = _param_values(item)
    marks: set[str] = set()
    if fixtures & PG_FIXTURES or "postgresql" in params:
        marks.add("pg")
    if fixtures & REDIS_FIXTURES or "redis" in params or names & REDIS_NAMES:
        marks.add("redis")
    if names & BROWSER_NAMES:
        marks.add("browser")
    if fixtures & MODEL_FIXTURES or names & MODEL_NAMES:
        marks.add("model")
    if names & CLIENT_NAMES:
        marks.add("clients")
    try:
        folder = Path(item.path).resolve().relative_to(TESTS).parts[0]
    except ValueError:
        folder = ""
    if folder in FOLDER_MARKS:
        marks.add(FOLDER_MARKS[folder])
    slow = SLOW.get(Path(item.path).resolve().relative_to(TESTS).as_posix()
                    if folder else "", set())
    where = f"{Path(item.path).resolve().relative_to(TESTS).as_posix()}::{item.originalname}"
    if (slow is ALL or item.originalname in slow or fixtures & SLOW_FIXTURES
            or where in SLOW_LISTED):
        marks.add("slow")
    return marks


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if isinstance(item, pytest.Function):
            for mark in sorted(needs(item)):
                item.add_marker(mark)
    # The minute-long soak first: started last, it would run alone at the end of `make test`
    # while the other worker idles.
    items.sort(key=lambda item: item.get_closest_marker("soak") is None)
