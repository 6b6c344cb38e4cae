"""The whole spec: one file describing a full LLM run."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from specc.spec.alignment import AlignmentStage
from specc.spec.base import SpecModel
from specc.spec.cluster import ClusterSpec
from specc.spec.data import CorpusSpec, DedupSpec, Filter, TokenizerSpec
from specc.spec.deploy import DeploySpec
from specc.spec.evaluation import EvalSpec
from specc.spec.model import ModelSpec
from specc.spec.parallel import ParallelSpec
from specc.spec.schedule import ScheduleSpec
from specc.spec.tracking import TrackingSpec
from specc.spec.types import Identifier

SCHEMA_URL = "../specc/schema/spec.schema.json"


class Spec(SpecModel):
    """A specc experiment spec. Sections run in pipeline order: data -> tokenizer ->
    pretrain -> alignment -> eval -> deploy, on the cluster described in `cluster`."""

    name: Identifier
    """Run name; used in bundle directory names and Slurm job names."""
    description: str = ""
    """Free text shown in the bundle README."""
    extends: str | list[str] | None = None
    """Base spec file(s) this one overrides (resolved by the loader; paths relative to this file)."""
    corpus: CorpusSpec | None = None
    """Training text sources and mixture; omit to plan without data stages."""
    filters: list[Filter] = []
    """Document filters applied in this order."""
    dedup: DedupSpec = DedupSpec()
    """Exact and near-duplicate removal."""
    tokenizer: TokenizerSpec = TokenizerSpec()
    """The byte-level BPE tokenizer."""
    model: ModelSpec
    """The model architecture."""
    parallel: Literal["auto"] | ParallelSpec = "auto"
    """The parallel layout, or `auto` to search for the best one."""
    schedule: ScheduleSpec
    """Optimizer, schedule, batch and budget."""
    alignment: list[AlignmentStage] = []
    """Post-training stages, in order."""
    eval: EvalSpec = EvalSpec()
    """Evaluation tasks."""
    deploy: DeploySpec = DeploySpec()
    """Deployment targets."""
    cluster: ClusterSpec = Field(default_factory=ClusterSpec)
    """Hardware and scheduler."""
    tracking: TrackingSpec = TrackingSpec()
    """Experiment tracking (TensorBoard event files by default)."""


SECTION_NAMES = tuple(Spec.model_fields)
