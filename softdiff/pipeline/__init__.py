"""``SoftdiffPipeline``: load a trained model (a run folder, a model folder or a saved pipeline), sample from
it, save it as a diffusers pipeline folder."""


def __getattr__(name: str):
    # diffusers loads on first use, so that ``softdiff sample --help`` (softdiff.pipeline.cli) does not wait for it.
    if name in ("SoftdiffPipeline", "SoftdiffPipelineOutput"):
        from softdiff.pipeline import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["SoftdiffPipeline", "SoftdiffPipelineOutput"]
