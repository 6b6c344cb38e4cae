"""R294: `eval.backend: lm_eval` needs lm-evaluation-harness where the stage runs; checked at launch
(the launching machine's environment), not by `specc validate` (which may run elsewhere)."""

from __future__ import annotations

from pathlib import Path

import yaml

from specc.diagnostics.rules import eval_rules
from specc.diagnostics.rules.path_rules import InputFiles
from specc.spec.root import Spec

SPEC = """
name: case
model: {num_layers: 2, hidden_size: 64, num_heads: 4, ffn_hidden_size: 128, vocab_size: 512, max_seq_len: 128}
schedule: {lr: 1e-3, seq_len: 128, global_batch_size: 8, steps: 100, checkpoint_interval: 50}
tokenizer: {vocab_size: 512}
eval: {backend: lm_eval, tasks: [{name: arc, type: arc, path: arc.jsonl}]}
"""


def test_lm_eval_backend_needs_the_package_at_launch(monkeypatch):
    spec = Spec.model_validate(yaml.safe_load(SPEC))
    at_launch, at_validate = InputFiles(Path("."), check_absolute=True), InputFiles(Path("."), check_absolute=False)
    installed = eval_rules.importlib.util.find_spec("lm_eval") is not None
    assert [f.path for f in eval_rules.lm_eval_is_installed(spec, at_launch)] == ([] if installed else [("eval", "backend")])
    # an environment without the package (the finder says so): launch refuses, validate leaves it
    monkeypatch.setattr(eval_rules.importlib.util, "find_spec", lambda name, *a: None)
    findings = list(eval_rules.lm_eval_is_installed(spec, at_launch))
    assert [f.path for f in findings] == [("eval", "backend")] and "specc[eval]" in findings[0].hint
    assert list(eval_rules.lm_eval_is_installed(spec, at_validate)) == []
    builtin = Spec.model_validate({**yaml.safe_load(SPEC), "eval": {"tasks": [{"name": "a", "type": "arc", "path": "a"}]}})
    assert list(eval_rules.lm_eval_is_installed(builtin, at_launch)) == []
