"""The five construction stages, in order."""
from flows.stages.expand import ExpandStage
from flows.stages.qc import QualityStage
from flows.stages.respond import RespondStage
from flows.stages.structure import StructureStage
from flows.stages.taxonomy import TaxonomyStage


def default_stages():
    return [TaxonomyStage(), ExpandStage(), StructureStage(), QualityStage(), RespondStage()]
