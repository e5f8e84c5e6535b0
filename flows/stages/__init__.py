"""The five construction stages, then the preference-data stages that fork from stage 5."""
from flows.stages.expand import ExpandStage
from flows.stages.pairs import DPOStage, IOPOStage
from flows.stages.qc import QualityStage
from flows.stages.respond import RespondStage
from flows.stages.structure import StructureStage
from flows.stages.taxonomy import TaxonomyStage


def default_stages(preference_data: bool = True):
    stages = [TaxonomyStage(), ExpandStage(), StructureStage(), QualityStage(), RespondStage()]
    return stages + [DPOStage(), IOPOStage()] if preference_data else stages
