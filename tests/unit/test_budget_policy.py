"""Budget windows and which limits apply: pure policy, no database."""

from datetime import datetime

import pytest

from llmgw.budgets.rules import BudgetPolicy, Rule
from llmgw.config.models import BudgetSettings


def policy(**kw) -> BudgetPolicy:
    return BudgetPolicy(BudgetSettings.model_validate(kw))


@pytest.mark.parametrize(("tz", "now", "period", "start", "end"), [
    ("UTC", datetime(2026, 11, 23, 15, 0), "day", datetime(2026, 11, 23), datetime(2026, 11, 24)),
    ("UTC", datetime(2026, 12, 31, 23, 59), "month", datetime(2026, 12, 1), datetime(2027, 1, 1)),
    ("UTC", datetime(2028, 2, 29, 12, 0), "month", datetime(2028, 2, 1), datetime(2028, 3, 1)),
    # Paris is UTC+1 in winter: its day starts at 23:00 UTC the day before
    ("Europe/Paris", datetime(2026, 11, 23, 22, 59), "day", datetime(2026, 11, 22, 23, 0),
     datetime(2026, 11, 23, 23, 0)),
    ("Europe/Paris", datetime(2026, 11, 23, 23, 0), "day", datetime(2026, 11, 23, 23, 0),
     datetime(2026, 11, 24, 23, 0)),
    # the day DST starts (2027-03-28) is 23 hours long in Paris
    ("Europe/Paris", datetime(2027, 3, 28, 12, 0), "day", datetime(2027, 3, 27, 23, 0),
     datetime(2027, 3, 28, 22, 0)),
    ("America/New_York", datetime(2026, 12, 1, 3, 0), "month", datetime(2026, 11, 1, 4, 0),
     datetime(2026, 12, 1, 5, 0)),
])
def test_window_start_and_reset(tz, now, period, start, end):
    p = policy(timezone=tz)
    assert p.period_start(now, period) == start
    assert p.period_end(start, period) == end


def test_one_policy_asked_across_windows_in_any_order_gives_each_its_own_start():
    remembered = policy(timezone="Europe/Paris")  # keeps the last window it worked out
    nows = [datetime(2026, 11, 23, 22, 59), datetime(2026, 11, 23, 23, 0),
            datetime(2026, 11, 23, 22, 59, 59, 999999), datetime(2026, 11, 30, 23, 0),
            datetime(2026, 11, 1, 0, 0), datetime(2027, 3, 28, 12, 0),
            datetime(2027, 3, 28, 22, 0), datetime(2027, 3, 28, 21, 59)]
    for now in nows + nows[::-1]:
        for period in ("day", "month"):
            assert remembered.period_start(now, period) == policy(
                timezone="Europe/Paris").period_start(now, period)


def test_star_defaults_give_each_id_its_own_limit_and_db_rules_win():
    p = policy(warn_at=0.7, projects={"*": {"daily_usd": 50}, "vip": {"daily_usd": 500}},
               agents={"*": {"daily_usd": "10.5"}}, **{"global": {"monthly_usd": 1000}})
    limits = {(x.scope, x.scope_id, x.period): (x.limit_micros, x.warn_ratio)
              for x in p.limits(agent_id="dev-1", agent_type="qa", project_id="shop", rules=[])}
    assert limits == {("global", "*", "month"): (1_000_000_000, 0.7),
                      ("project", "shop", "day"): (50_000_000, 0.7),
                      ("agent", "dev-1", "day"): (10_500_000, 0.7)}
    vip = p.limits(agent_id="dev-1", agent_type=None, project_id="vip", rules=[])
    assert ("project", "vip", "day", 500_000_000) in {(x.scope, x.scope_id, x.period,
                                                      x.limit_micros) for x in vip}
    rules = [Rule("project", "shop", "day", 5, 0.5), Rule("agent", "*", "month", 7, 0.9)]
    limits = {(x.scope, x.scope_id, x.period): (x.limit_micros, x.warn_ratio)
              for x in p.limits(agent_id="dev-1", agent_type=None, project_id="shop",
                                rules=rules)}
    assert limits[("project", "shop", "day")] == (5, 0.5)
    assert limits[("agent", "dev-1", "month")] == (7, 0.9)
    assert limits[("agent", "dev-1", "day")] == (10_500_000, 0.7)


def test_request_cap_from_config_or_db():
    assert policy().request_cap([]) is None
    assert policy(per_request_usd="1.25").request_cap([]).limit_micros == 1_250_000
    assert policy(per_request_usd=1).request_cap([Rule("request", "*", "request", 9, 0.8)]
                                                 ).limit_micros == 9


def test_bad_budget_settings_are_config_errors():
    from llmgw.config.loading import config_from_dict
    from llmgw.errors import ConfigError

    base = {"model_list": [{"model_name": "g", "litellm_params": {"model": "openai/x"},
                            "model_info": {"input_cost_per_token": 0, "output_cost_per_token": 0}}],
            "llmgw": {"default_group": "g"}}
    for budgets, key in (({"timezone": "Mars/Olympus"}, "llmgw.budgets.timezone"),
                         ({"projects": {"*": {"daily_usd": -1}}},
                          "llmgw.budgets.projects.*.daily_usd"),
                         ({"agent_types": {"qa": {"downgrade_to": "nope"}}},
                          "llmgw.budgets.agent_types.qa.downgrade_to"),
                         ({"warn_at": 1.5}, "llmgw.budgets.warn_at")):
        with pytest.raises(ConfigError) as info:
            config_from_dict({**base, "llmgw": {**base["llmgw"], "budgets": budgets}})
        assert info.value.key == key, str(info.value)
