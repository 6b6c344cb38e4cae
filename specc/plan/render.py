"""The human report of a plan: rich tables for layout, memory (a bar per component against the
device's capacity), time, cost, scaling, candidates side by side, deployment and warnings."""

from __future__ import annotations

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from specc.plan.findings import severity_of
from specc.plan.plan import Plan

BAR_WIDTH = 40
SEVERITY_STYLE = {"error": "bold red", "warning": "yellow"}
COMPONENT_STYLE = {"params": "cyan", "grads": "blue", "optimizer": "magenta", "activations": "yellow", "other": "white"}


def _layout_text(layout: dict) -> str:
    parts = [f"dp{layout['dp']}", f"tp{layout['tp']}", f"pp{layout['pp']}"]
    if layout.get("vpp", 1) > 1:
        parts.append(f"vpp{layout['vpp']}")
    if layout["cp"] > 1:
        parts.append(f"cp{layout['cp']}")
    if layout["ep"] > 1:
        parts.append(f"ep{layout['ep']}")
    sharding = _sharding_text(layout)
    recompute = layout["recompute"]
    if recompute == "selective" and layout.get("selective_policy", "matmuls") != "matmuls":
        recompute += f" ({layout['selective_policy']})"
    if layout.get("recompute_every", 1) > 1:
        recompute += f" (1 block in {layout['recompute_every']})"
    return f"{' x '.join(parts)}  {sharding}  mb{layout['micro_batch']} x ga{layout['grad_accum']}  recompute={recompute}"


def _sharding_text(layout: dict) -> str:
    """FSDP under pipelining keeps each stage's parameters gathered from the first micro-batch's
    forward to the step's last backward (the runtime does not reshard after forward when pp > 1,
    as torchtitan does not), which the planner charges (`memory.persistent_fsdp_memory`): the
    label says so rather than suggesting ZeRO-3's reshard-per-layer memory."""
    if not layout.get("fsdp"):
        return f"zero{layout['zero_stage']}"
    return "fsdp (gathered per step under pp)" if layout.get("pp", 1) > 1 else "fsdp"


def _memory_bar(memory: dict, capacity: float) -> Text:
    """One bar: each component's share of the capacity, in its colour; '!' past the capacity."""
    scale = max(capacity, memory["per_device_gib"]) or 1.0
    bar = Text()
    for name, value in memory["breakdown_gib"].items():
        cells = round(value / scale * BAR_WIDTH)
        bar.append("█" * cells, style=COMPONENT_STYLE.get(name, "white"))
    filled = len(bar.plain)
    capacity_cell = round(capacity / scale * BAR_WIDTH)
    if filled < capacity_cell:
        bar.append("·" * (capacity_cell - filled), style="dim")
    return bar


def _memory_table(plan: Plan) -> Table:
    data = plan.memory.model_dump()
    capacity = plan.hardware.memory_gib
    moment = {"loss": "at the loss", "backward": "in backward", "optimizer": "at the optimizer step"}.get(
        data.get("peak_phase", ""), "at its peak")
    table = Table(title=f"Memory per device ({data.get('stage', 'only')} stage, {moment}) vs {capacity:.1f} GiB",
                  show_header=True)
    table.add_column("component")
    table.add_column("GiB", justify="right")
    table.add_column("share")
    for name, value in data["breakdown_gib"].items():
        cells = round(value / max(capacity, data["per_device_gib"]) * BAR_WIDTH)
        table.add_row(name, f"{value:.2f}", Text("█" * cells, style=COMPONENT_STYLE.get(name, "white")))
    verdict = Text("fits", style="green") if data["fits"] else Text("DOES NOT FIT", style="bold red")
    table.add_row(Text("total", style="bold"), f"{data['per_device_gib']:.2f}", Text.assemble(_memory_bar(data, capacity), "  ", verdict))
    return table


def _time_table(plan: Plan) -> Table:
    t = plan.time.model_dump()
    table = Table(title="Time and cost", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    rows = [
        ("step", f"{t['step_s']:.3f} s"), ("tokens/s", f"{t['tokens_per_s']:,.0f}"),
        ("MFU / HFU", f"{t['mfu']:.1%} / {t['hfu']:.1%}"), ("TFLOP/s per device", f"{t['tflops_per_device']:.1f}"),
        ("steps", f"{t['steps']:,}"), ("train days", f"{t['train_days']:.2f}"),
        ("device-hours", f"{t['device_hours']:,.0f}"), ("cost", f"${t['cost_usd']:,.0f} at ${t['cost_per_device_hour']}/device-h"),
    ]
    for what, value in rows:
        table.add_row(what, value)
    parts = ", ".join(f"{k} {v:.3g}" for k, v in t["breakdown_s"].items() if v)
    table.add_row("step parts (s)", parts)
    return table


def _candidates_table(plan: Plan) -> Table:
    table = Table(title="Candidates (best first)")
    for column in ("#", "layout", "GiB", "step s", "MFU", "days"):
        table.add_column(column, justify="right" if column != "layout" else "left")
    for index, candidate in enumerate(plan.candidates, 1):
        c = candidate.model_dump()
        table.add_row(str(index), _layout_text(c["layout"]), f"{c['memory']['per_device_gib']:.1f}",
                      f"{c['time']['step_s']:.3f}", f"{c['time']['mfu']:.1%}", f"{c['time']['train_days']:.2f}")
    return table


def render(plan: Plan, console: Console | None = None) -> None:
    """Print the report."""
    console = console or Console()
    data = plan.model_dump()
    model, hardware, scaling = data["model"], data["hardware"], data["scaling"]
    header = Text.assemble(
        (f"{data['spec']['name']}", "bold"),
        f"  {model['params'] / 1e9:.3f}B params ({model['active_params'] / 1e9:.3f}B active), "
        f"{model['flops_per_token']:.3g} FLOPs/token  on {hardware['count']} x {hardware['accelerator']} "
        f"({hardware['peak_tflops']:g} TFLOP/s {hardware['precision']}, {hardware['memory_gib']:.1f} GiB)")
    if data["layout"] is None:
        console.print(Group(header, *_fine_tune_lines(data)))
        return
    layout = Text.assemble(("layout  ", "bold"), _layout_text(data["layout"]),
                           "  (searched)" if data.get("searched") else "  (from the spec)")
    scale = Text.assemble(("scaling  ", "bold"),
                          f"{scaling['tokens_per_param']:.1f} tokens/param, compute-optimal {scaling['chinchilla_tokens']:.3g} "
                          f"tokens, predicted loss {scaling['predicted_loss']:.3f} ({scaling['fit']})")
    bars = data["error_bars"]
    error = Text(f"error bars: throughput ±{bars['throughput_median_abs_pct']}% median (p90 "
                 f"{bars['throughput_p90_abs_pct']}%) vs published runs, each source held out; memory ±{bars['memory_median_abs_pct']}% "
                 f"median vs torch's memory tracker, ±{bars['memory_published_median_abs_pct']}% vs published peaks",
                 style="dim")
    if bars.get("profile"):
        profile = bars["profile"]
        error.append(f"\ncalibrated with profile `{profile['name']}`: step time ±{profile['error_median_pct']}% median "
                     f"(p90 {profile['error_p90_pct']}%), {profile['method']} over {profile['runs']} run(s)")
    parts = [header, layout, _memory_table(plan), _time_table(plan), scale, error]
    if data.get("reliability"):
        parts.append(Text.assemble(("failures  ", "bold"), reliability_text(data["reliability"])))
    if data.get("data"):
        parts.append(Text.assemble(("data  ", "bold"), data_text(data["data"])))
    if len(plan.candidates) > 1:
        parts.append(_candidates_table(plan))
    parts += _stage_lines(data)
    console.print(Group(*parts))


def _fine_tune_lines(data: dict) -> list[Text]:
    """A plan without a pretrain stage: what runs, and that no pretraining is charged."""
    return [Text.assemble(("stages  ", "bold"), " -> ".join(data.get("stages") or []),
                          "  (no pretrain stage: no pretraining time, cost or memory is charged)"),
            *_stage_lines(data)]


def _stage_lines(data: dict) -> list[Text]:
    parts = []
    for target in data.get("deploy") or []:
        parts.append(Text(f"deploy {target['name']}: {target['per_device_gib']:.1f} / {target['capacity_gib']:.1f} GiB per "
                          f"device on {target['count']} x {target['accelerator']} (weights {target['weights_gib']:.1f}, "
                          f"KV cache {target['kv_cache_gib']:.1f}, draft {target['draft_gib']:.1f}) "
                          f"{'fits' if target['fits'] else 'DOES NOT FIT'}"))
    for stage in data.get("alignment") or []:
        parts.append(Text(f"align {stage['stage']} ({stage['type']}): {stage['per_device_gib']:.1f} / "
                          f"{stage['capacity_gib']:.1f} GiB per device, {stage['placement']} "
                          f"{'fits' if stage['fits'] else 'DOES NOT FIT'}"))
    for finding in data["warnings"]:
        severity = severity_of(finding)
        parts.append(Text.assemble((f"{severity}[{finding['code']}] ", SEVERITY_STYLE[severity]), finding["message"]))
    return parts


def data_text(estimate: dict) -> str:
    """The data and tokenize stages' estimate in one paragraph (`specc.plan.data_stage`)."""
    if estimate.get("documents") is None:
        sharded = estimate.get("sharded_dedup")
        return estimate["note"] + (f"; sharded dedup at {sharded['bucket_tasks']} bucket task(s) ({sharded['note']})"
                                   if sharded else "")
    text = (f"{estimate['documents']:,} documents: data stage ~{_duration(estimate['data_seconds'])} "
            f"(filter+sign {_duration(estimate['filter_seconds'])}, dedup {_duration(estimate['dedup_seconds'])}), "
            f"tokenizer ~{_duration(estimate['tokenizer_seconds'])}")
    sharded = estimate.get("sharded_dedup")
    if sharded:
        text += (f"; sharded dedup at {sharded['bucket_tasks']} bucket task(s): bucket task "
                 f"{sharded['buckets_bytes_per_task'] / 2**20:,.1f} MiB = documents x "
                 f"{estimate['sharded_bucket_bytes_per_document']} B / tasks "
                 f"(target {sharded['bucket_task_target_bytes'] / 2**30:g} GiB per task)")
    return text + f" [{estimate['note']}; rates: {estimate['rates_measured']}]"


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 3600:.2f} h" if seconds >= 7200 else f"{seconds / 60:.1f} min"


def reliability_text(budget: dict) -> str:
    """The failure budget in one line: interruptions, checkpoint cost, goodput and the advised interval."""
    mtbf = f"one interruption every {budget['mtbf_h']:.3g} h" if budget.get("mtbf_h") else "no interruptions"
    text = (f"{mtbf} ({budget['devices']} devices); checkpoint {budget['checkpoint_gib']:.3g} GiB written in "
            f"{budget['checkpoint_write_s']:.3g} s; goodput {budget['goodput']:.1%} checkpointing every "
            f"{budget['interval_steps']} steps")
    if budget.get("optimal_interval_steps"):
        text += (f", {budget['goodput_at_optimum']:.1%} at the optimal {budget['optimal_interval_steps']} steps "
                 f"({budget['optimal_interval_s']:.3g} s, Young/Daly)")
    restarts = f"{budget['expected_restarts']:.3g} restarts expected"
    if budget.get("max_requeues") is not None:
        restarts += f" (max_requeues {budget['max_requeues']})"
    wall = f"{budget['wall_days']:.3g} days" if budget.get("wall_days") is not None else "a wall time too long to compute"
    return f"{text}; {restarts} over {wall}"


def _params_text(count: float) -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if count >= scale:
            return f"{count / scale:.3g}{suffix}"
    return f"{count:.0f}"


def _amount(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def render_summary(plan: dict) -> str:
    """The plan in a few lines, as `specc launch` shows it before acting (Terraform shows the plan
    before apply): layout, memory per device against capacity, step time, MFU, days, cost, and
    every finding with its severity. Takes the plan contract as a dict, so saved plans render too."""
    model, hardware, layout = plan["model"], plan["hardware"], plan["layout"]
    memory, time = plan["memory"], plan["time"]
    capacity = hardware["memory_gib"]
    active = "" if model["active_params"] == model["params"] else f" ({_params_text(model['active_params'])} active)"
    lines = [
        f"plan: {plan['spec']['name']}  {_params_text(model['params'])} params{active} on {hardware['count']} x "
        f"{hardware['accelerator']} ({hardware.get('precision', '?')}, {capacity:.1f} GiB per device)"]
    if plan.get("stages") is not None:
        lines.append(f"  stages  {' -> '.join(plan['stages'])}")
    if layout is None:
        lines.append("  no pretrain stage: no pretraining time, cost or memory is charged")
    else:
        lines += _training_summary(plan, layout, memory, time, capacity)
    if plan.get("reliability"):
        lines.append(f"  failure {reliability_text(plan['reliability'])}")
    for stage in plan.get("alignment") or []:
        lines.append(f"  align   {stage['stage']} ({stage['type']}): {stage['per_device_gib']:.2f} of "
                     f"{stage['capacity_gib']:.1f} GiB per device: {'fits' if stage['fits'] else 'DOES NOT FIT'}")
    for finding in plan.get("warnings", []):
        lines.append(f"  {severity_of(finding)}[{finding['code']}] {finding['message']}")
    return "\n".join(lines)


def _training_summary(plan: dict, layout: dict, memory: dict, time: dict, capacity: float) -> list[str]:
    share = f" ({memory['per_device_gib'] / capacity:.0%})" if capacity else ""
    cost = f", ${time['cost_usd']:,.0f}" if time.get("cost_usd") is not None else ""
    return [
        f"  layout  {_layout_text(layout)}  {'(searched)' if plan.get('searched') else '(from the spec)'}",
        f"  memory  {memory['per_device_gib']:.2f} of {capacity:.1f} GiB per device{share}: "
        f"{'fits' if memory['fits'] else 'DOES NOT FIT'}",
        f"  time    step {time['step_s']:.3g} s, MFU {time['mfu']:.1%}, {time.get('steps', 0):,} steps, "
        f"{time['train_days']:.3g} days, {_amount(time['device_hours'])} device-hours{cost}",
    ]
