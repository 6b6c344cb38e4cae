"""The planner (`specc plan`): model accounting, memory per device, time per step, layout search,
scaling-law check and deployment memory, assembled into the plan contract of ../shared/DESIGN.md.

Pure Python: nothing here imports torch.
"""

from __future__ import annotations

from specc.plan.params import ParameterCount, count_parameters, flops_per_token
from specc.plan.plan import Plan, build_plan, plan_json

__all__ = ["ParameterCount", "Plan", "build_plan", "count_parameters", "flops_per_token", "plan_json"]
