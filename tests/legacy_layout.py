"""Model folders in the layout training wrote before it saved pipelines (tests/fixtures/run_v1 holds two that
it wrote; tests/test_model_format.py checks that this writer gives the same files): the net's ``config.json``
and safetensors weights, ``scheduler_config.json`` (the training noise schedule) and ``data_info.json`` (the
data, as ``name`` / ``shape``). Tests write them to check that the reader's legacy branch still reads them."""
import json
from pathlib import Path

from softdiff.pipeline.folders import SCHEDULER_CLASSES


def save_legacy_model(pipe, path: Path) -> None:
    """``pipe``'s net, forward process and data space as a legacy model folder ``path``."""
    path.mkdir(parents=True)
    pipe.model.save_pretrained(path, safe_serialization=True)
    process = pipe.forward_process
    SCHEDULER_CLASSES[process["_class_name"]].from_config(process).save_pretrained(path)
    c = pipe.config
    info = {"name": c.dataset, "kind": c.kind, "shape": list(c.sample_shape), "data_range": list(c.data_range),
            "num_classes": c.num_classes}
    (path / "data_info.json").write_text(json.dumps(info, indent=2))
