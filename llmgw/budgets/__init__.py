"""Budgets: the rules (`rules`), the worst-case planner, rates and prices."""
