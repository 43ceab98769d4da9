"""docs/models.md is generated from the code (benchmarks/models.py): it must be what the
generator writes now, list every registered model, and measure every preset as it is now."""

import importlib.util
import json
from pathlib import Path

from oplab import models
from oplab.models.presets import PRESETS, derive

ROOT = Path(__file__).resolve().parents[1]


def _generator():
    spec = importlib.util.spec_from_file_location("models_doc", ROOT / "benchmarks" / "models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_models_doc_is_generated_from_the_registry():
    record = json.loads((ROOT / "benchmarks" / "models.json").read_text())
    assert set(record["records"]) == set(PRESETS), "measure new presets: python benchmarks/models.py --only NAME"
    text = (ROOT / "docs" / "models.md").read_text()
    assert text == _generator().render(record), "docs/models.md is stale: python benchmarks/models.py --doc-only"
    for name in models.available():
        cls = models.get(name)
        assert f"## `{name}` ({cls.__name__}" in text and cls.reference in text
    for preset, rec in record["records"].items():
        # the measured configuration is the preset as it is now (a changed preset must be re-measured)
        now = derive({"name": preset}, rec["x_shape"], rec["y_shape"], None, [False] * (len(rec["y_shape"]) - 2))
        assert rec["model"] == now, f"{preset} changed since it was measured: python benchmarks/models.py --only {preset}"
        assert rec["params"] == models.from_config(now).n_params()
        assert rec["train_ms"] > 0 and f"| `{preset}` |" in text
