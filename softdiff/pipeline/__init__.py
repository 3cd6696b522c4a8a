"""``SoftdiffPipeline``: load a trained model (a run folder, a model folder or a saved pipeline), sample from
it, save it as a diffusers pipeline folder."""
from softdiff.pipeline.pipeline import SoftdiffPipeline, SoftdiffPipelineOutput

__all__ = ["SoftdiffPipeline", "SoftdiffPipelineOutput"]
