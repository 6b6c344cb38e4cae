"""What validate reads of a `model.init_from` directory without torch (`specc.spec.hf_config`):
damaged downloads and hand-made files are refused with the file and the reason (R221-R223)."""

from __future__ import annotations

import json
import re
import struct

import pytest

from specc.spec.hf_config import (HFConfigError, read_hf_model, safetensors_problem, tokenizer_json_problem,
                                  weight_files)


def _safetensors(path, header: dict, data: bytes) -> None:
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data)


def test_safetensors_headers_are_checked_against_the_file_size(tmp_path):
    whole = tmp_path / "whole.safetensors"
    _safetensors(whole, {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, bytes(8))
    assert safetensors_problem(whole) is None
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(whole.read_bytes()[:-4])
    assert "ends at byte 8 of the data, which has 4: the file is truncated" in safetensors_problem(cut)
    (tmp_path / "short.safetensors").write_bytes(b"\x01\x02")
    assert "shorter than a safetensors header" in safetensors_problem(tmp_path / "short.safetensors")
    (tmp_path / "huge.safetensors").write_bytes(struct.pack("<Q", 2**60) + b"{}")
    assert "claims 1152921504606846976 bytes" in safetensors_problem(tmp_path / "huge.safetensors")
    (tmp_path / "text.safetensors").write_bytes(struct.pack("<Q", 4) + b"{no}")
    assert "header is not JSON" in safetensors_problem(tmp_path / "text.safetensors")


@pytest.mark.parametrize(("weight_map", "message"), [
    ({}, "maps no tensor to a file (empty weight_map)"),
    ({"w": "../other/model.safetensors"}, "names '../other/model.safetensors', not a shard file beside the index"),
    ({"w": 3, "v": "a.safetensors"}, "is not a safetensors index"),
])
def test_a_weights_index_names_shards_beside_it(tmp_path, weight_map, message):
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(HFConfigError, match=re.escape(message)):
        weight_files(tmp_path)


def test_tokenizer_json_and_config_values_are_read_not_trusted(tmp_path):
    (tmp_path / "tokenizer.json").write_text("<html>404 Not Found</html>")
    assert tokenizer_json_problem(tmp_path / "tokenizer.json").startswith("is not readable JSON")
    (tmp_path / "tokenizer.json").write_text('{"version": "1.0"}')
    assert "no `model` object" in tokenizer_json_problem(tmp_path / "tokenizer.json")
    (tmp_path / "tokenizer.json").write_text('{"model": {"type": "BPE"}}')
    assert tokenizer_json_problem(tmp_path / "tokenizer.json") is None
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": None,
                                                      "num_hidden_layers": "two", "num_attention_heads": 4}))
    with pytest.raises(HFConfigError, match="not whole numbers: hidden_size: None, num_hidden_layers: 'two'"):
        read_hf_model(tmp_path)


def test_null_head_dim_and_kv_heads_mean_transformers_defaults(tmp_path):
    """transformers writes `head_dim: null` (Mixtral) and may write `num_key_value_heads: null`:
    its defaults (hidden // heads, all heads), not a wrong value."""
    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 320, "hidden_size": 64,
              "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": None, "head_dim": None, "max_position_embeddings": 128}
    (tmp_path / "config.json").write_text(json.dumps(config))
    try:
        fields = read_hf_model(tmp_path).fields
    except HFConfigError as error:  # later checks (weights, tokenizer) may refuse the bare directory
        assert "not whole numbers" not in str(error), error
        return
    assert fields["head_dim"] == 16 and fields["num_kv_heads"] == 4
