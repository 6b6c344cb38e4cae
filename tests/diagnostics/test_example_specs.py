"""Every spec under specs/ validates and carries the schema comment for editors."""

from __future__ import annotations

import pytest

from conftest import example_specs
from specc.cli import main
from specc.diagnostics.check import check_file


@pytest.mark.parametrize("path", example_specs(), ids=lambda p: p.name)
def test_example_validates(path):
    result = check_file(path)
    assert result.valid, "\n".join(d.to_text() for d in result.diagnostics)


@pytest.mark.parametrize("path", example_specs(), ids=lambda p: p.name)
def test_example_starts_with_schema_comment(path):
    first_line = path.read_text().splitlines()[0]
    assert first_line == "# yaml-language-server: $schema=../specc/schema/spec.schema.json"


def test_validate_all_examples_exits_zero(capsys):
    assert main(["validate", *map(str, example_specs())]) == 0


def test_expected_examples_present():
    names = {p.stem for p in example_specs()}
    for needed in ("tiny", "llama3-8b-h100x8", "llama3-70b-h100x64", "llama3-405b-h100x16k",
                   "mixtral-8x7b-h100x128", "llama2-7b-tpu-v5p", "baichuan-7b-a100x1024", "gpt3-175b-v100"):
        assert needed in names


def test_published_layouts_resolve():
    """The 405B spec keeps the published layout: tp8 x pp16 x dp128 on 16,384 GPUs."""
    from specc.spec.derived import total_devices
    from specc.spec.parallel_dims import data_parallel_size

    spec = check_file("specs/llama3-405b-h100x16k.yaml").spec
    assert total_devices(spec.cluster) == 16384
    assert (spec.parallel.tp, spec.parallel.pp, data_parallel_size(spec.parallel, 16384)) == (8, 16, 128)
    assert spec.schedule.batch_sequences() == 2048
    long = check_file("specs/llama3-405b-long-context.yaml").spec
    assert (long.parallel.cp, long.parallel.dp, long.schedule.seq_len) == (16, 8, 131072)
    assert long.model == spec.model
