"""``--seed`` seeds the whole run, initialisation included: a head's (and a from-scratch
encoder's, and LoRA adapters') initial weights come from ``seed``, not from whatever the
process's global torch RNG happened to hold, and a run leaves that global RNG as it found it.

(The fine-tuning benchmark showed it: the frozen head's result moved with the number of models
built earlier in the same process.)"""

from __future__ import annotations

import pytest
import torch

from clay_search.model.headfile import load_head
from clay_search.tasks import finetune_classify

FAST = {"epochs": 1, "batch_size": 16, "progress": False, "resume": False, "val_fraction": 0.3}


def _weights(out) -> dict[str, torch.Tensor]:
    model, _ = load_head(out)
    return {k: v.clone() for k, v in model.state_dict().items()}


def _train(sample_dir, out, disturb: int, **kw) -> dict[str, torch.Tensor]:
    torch.manual_seed(disturb)  # the caller's RNG state differs between the two runs
    torch.rand(disturb * 97 + 1)
    finetune_classify(sample_dir / "eurosat_ms", out, seed=0, **{**FAST, **kw})
    return _weights(out)


@pytest.mark.parametrize(
    "kw",
    [
        pytest.param({}, id="frozen"),
        pytest.param({"lora": 2}, id="lora"),
        pytest.param({"scratch": "nano"}, id="scratch"),
    ],
)
def test_same_seed_same_head_whatever_ran_before(sample_dir, tmp_path, kw):
    a = _train(sample_dir, tmp_path / "a", disturb=1, **kw)
    b = _train(sample_dir, tmp_path / "b", disturb=7, **kw)
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"same seed, different weights: {differ[:5]}"


def test_the_seed_sets_the_initialisation(sample_dir, tmp_path):
    """Another seed gives another head (the seed is used, not ignored)."""
    a = _train(sample_dir, tmp_path / "a", disturb=1)
    finetune_classify(sample_dir / "eurosat_ms", tmp_path / "b", seed=1, **FAST)
    b = _weights(tmp_path / "b")
    assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith("head."))


def test_a_run_leaves_the_global_rng_alone(sample_dir, tmp_path):
    torch.manual_seed(5)
    before = torch.get_rng_state()
    finetune_classify(sample_dir / "eurosat_ms", tmp_path / "h", seed=0, **FAST)
    assert torch.equal(torch.get_rng_state(), before)
