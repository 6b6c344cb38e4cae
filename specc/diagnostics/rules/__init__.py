"""The cross-field rules, in the order they report. Each has a stable code; the
function's docstring (with a passing and a failing example) is its documentation,
shown by `specc rules`."""

from __future__ import annotations

from specc.diagnostics.rules import (data_rules, model_rules, parallel_rules, path_rules, precision_rules,
                                     resource_rules, run_rules,
                                     stage_rules)
from specc.diagnostics.rules.base import Finding, Rule

RULES: tuple[Rule, ...] = (
    Rule("R101", ("model",), model_rules.heads_divisible_by_kv_heads),
    Rule("R102", ("model",), model_rules.hidden_divisible_by_heads),
    Rule("R103", ("model", "parallel"), parallel_rules.heads_split_over_tp),
    Rule("R104", ("model", "parallel"), parallel_rules.layers_fill_pipeline),
    Rule("R105", ("parallel",), parallel_rules.pipeline_schedule_matches_vpp),
    Rule("R106", ("parallel", "cluster"), parallel_rules.degrees_match_devices),
    Rule("R107", ("model", "parallel", "cluster"), parallel_rules.experts_fit_ep),
    Rule("R108", ("parallel", "schedule", "cluster"), parallel_rules.batch_divides_over_dp),
    Rule("R109", ("parallel", "schedule"), parallel_rules.sequence_splits_over_cp),
    Rule("R110", ("model", "schedule"), model_rules.positions_cover_sequence),
    Rule("R111", ("model", "tokenizer", "parallel"), model_rules.tokenizer_fits_vocab),
    Rule("R112", ("tokenizer",), model_rules.byte_bpe_has_room),
    Rule("R113", ("model",), model_rules.moe_routing_is_possible),
    Rule("R114", ("model",), model_rules.sliding_window_within_context),
    Rule("R250", ("model", "cluster"), model_rules.attention_kernel_runs_on_target),
    Rule("R251", ("model",), model_rules.attention_kernel_needs_sdpa),
    Rule("R252", ("cluster",), parallel_rules.fast_domain_covers_whole_nodes),
    Rule("R253", ("cluster",), parallel_rules.profile_matches_accelerator),
    Rule("R115", ("parallel",), parallel_rules.sequence_parallel_needs_tp),
    Rule("R116", ("parallel",), parallel_rules.zero_or_fsdp),
    Rule("R117", ("parallel", "cluster"), parallel_rules.tp_within_node),
    Rule("R118", ("parallel", "cluster"), parallel_rules.precision_supported),
    Rule("R119", ("parallel",), parallel_rules.selective_policy_needs_selective),
    Rule("R195", ("parallel", "cluster"), parallel_rules.runtime_supports_layout),
    Rule("R120", ("corpus",), run_rules.mixture_weights_sum_to_one),
    Rule("R121", ("corpus", "filters"), run_rules.filter_sources_exist),
    Rule("R122", ("dedup",), run_rules.minhash_bands_rows),
    Rule("R123", ("filters",), data_rules.filter_bounds_are_ordered),
    Rule("R124", ("filters",), data_rules.classifier_has_a_model),
    Rule("R125", ("filters",), data_rules.filter_patterns_compile),
    Rule("R126", ("filters",), data_rules.languages_are_identifiable),
    Rule("R127", ("corpus",), data_rules.mixture_has_one_target),
    Rule("R230", ("filters",), data_rules.perplexity_filter_has_one_model),
    Rule("R130", ("schedule",), run_rules.budget_is_defined),
    Rule("R131", ("schedule",), run_rules.warmup_and_lr_make_sense),
    Rule("R132", ("schedule",), run_rules.optimizer_values_are_plausible),
    Rule("R140", ("cluster", "deploy"), run_rules.accelerator_known),
    Rule("R141", ("cluster",), run_rules.devices_match_nodes),
    Rule("R142", ("cluster",), run_rules.local_runs_on_one_node),
    Rule("R143", ("schedule", "cluster"), run_rules.checkpoints_within_time_limit),
    Rule("R240", ("cluster", "corpus", "alignment", "eval", "deploy"), resource_rules.stage_resources_name_stages),
    Rule("R241", ("cluster", "corpus", "alignment", "eval", "deploy"), resource_rules.stage_nodes_are_used),
    Rule("R242", ("cluster", "corpus", "alignment", "eval", "deploy"), resource_rules.stage_devices_are_used),
    Rule("R243", ("cluster", "dedup"), resource_rules.data_cpus_cover_workers),
    Rule("R244", ("cluster",), resource_rules.stage_time_exceeds_signal),
    Rule("R150", ("alignment",), run_rules.alignment_chain_is_valid),
    Rule("R151", ("model", "schedule", "alignment"), stage_rules.alignment_lengths_fit_model),
    Rule("R152", ("alignment",), stage_rules.alignment_values_are_plausible),
    Rule("R153", ("model", "eval"), stage_rules.generation_fits_context),
    Rule("R265", ("alignment",), stage_rules.ppo_placement_runs),
    Rule("R266", ("alignment", "cluster"), stage_rules.alignment_batch_divides_devices),
    Rule("R160", ("eval",), run_rules.eval_names_unique),
    Rule("R170", ("model", "deploy"), run_rules.quantization_fits_accelerator),
    Rule("R171", ("model", "deploy"), run_rules.draft_model_matches_target),
    Rule("R172", ("model", "deploy"), stage_rules.deploy_target_is_implemented),
    Rule("R173", ("model", "deploy"), stage_rules.serving_context_fits_model),
    Rule("R174", ("model", "deploy"), stage_rules.draft_architecture_is_valid),
    Rule("R190", ("parallel",), precision_rules.fp8_recipe_needs_fp8),
    Rule("R185", ("parallel", "cluster"), parallel_rules.loss_runs_on_target),
    Rule("R186", ("parallel",), parallel_rules.loss_chunk_tokens_needs_chunked),
    Rule("R208", ("corpus", "filters", "tokenizer", "alignment", "eval", "deploy"), path_rules.inputs_are_local_paths),
)

PATH_RULES: tuple[Rule, ...] = (
    Rule("R200", ("corpus",), path_rules.corpus_files_exist),
    Rule("R201", ("corpus", "filters"), path_rules.filter_files_exist),
    Rule("R202", ("tokenizer",), path_rules.tokenizer_file_exists),
    Rule("R203", ("alignment",), path_rules.alignment_data_exists),
    Rule("R204", ("alignment",), path_rules.chat_template_exists),
    Rule("R205", ("alignment",), path_rules.init_checkpoints_exist),
    Rule("R206", ("eval",), path_rules.eval_files_exist),
    Rule("R207", ("deploy",), path_rules.draft_checkpoint_exists),
)
"""Pre-flight rules: they read the filesystem (`check(spec, InputFiles)`), so they run apart from
RULES, on a valid spec (`specc.diagnostics.preflight`)."""

__all__ = ["RULES", "PATH_RULES", "Rule", "Finding"]
