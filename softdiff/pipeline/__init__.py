"""``SoftdiffPipeline``: load a trained model (a run folder, a model folder or a saved pipeline), sample from
it, save it as a diffusers pipeline folder."""
from softdiff.lazy_exports import lazy_exports

# diffusers loads on first use, so that ``softdiff sample --help`` (softdiff.commands.sample) does not wait for it.
__getattr__, __all__ = lazy_exports(__name__,
                                    {"softdiff.pipeline.pipeline": ("SoftdiffPipeline", "SoftdiffPipelineOutput")})
