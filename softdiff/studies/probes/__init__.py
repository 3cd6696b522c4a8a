"""Attention-sink and massive-activation probes of trained score networks."""
from softdiff.lazy_exports import lazy_exports

# Probing a run folder loads diffusers and the datasets: on first use, so that ``softdiff probe --help`` and its
# config errors do not wait for them.
__getattr__, __all__ = lazy_exports(__name__, {"softdiff.studies.probes.run_folder": ("probe_run",)})
