"""``SoftdiffPipeline``: load a trained model (a pipeline folder, the one format that training runs save as
``model/`` and ``model_ema/``, or a run folder), sample from it, save it as a pipeline folder. Imports nothing
from softdiff.training."""
from softdiff.lazy_exports import lazy_exports

# diffusers loads on first use, so that ``softdiff sample --help`` (softdiff.pipeline.cli) does not wait for it.
__getattr__, __all__ = lazy_exports(__name__,
                                    {"softdiff.pipeline.pipeline": ("SoftdiffPipeline", "SoftdiffPipelineOutput")})
