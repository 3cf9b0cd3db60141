"""LoRA: parameter counts, a zero adapter leaves the encoder exactly as it was, merge/unmerge,
and the train -> save (adapters only) -> load -> predict round trip on the shipped sample, with
the base-weights check."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from clay_search.errors import HeadError, TrainingDataError
from clay_search.model.backbone import ClayBackbone, Metadata
from clay_search.model.clay import ClayEncoder, get_config
from clay_search.model.headfile import HEAD_TENSORS, load_head, read_head_spec
from clay_search.model.heads import ChipModel
from clay_search.model.lora import (
    LoRAConfig,
    LoRALinear,
    apply_lora,
    count_parameters,
    lora_state_dict,
    merge_lora,
    unmerge_lora,
)
from clay_search.predict import predict_chips
from clay_search.tasks import finetune_classify

TARGETS_ALL = ("qkv", "proj", "mlp")
META = Metadata(waves=torch.tensor([0.665, 0.56, 0.49]), gsd=10.0)


def _encoder(seed: int = 0) -> ClayEncoder:
    torch.manual_seed(seed)
    return ClayEncoder.from_config(get_config("nano")).eval()


def _expected_adapter_params(enc: ClayEncoder, rank: int, targets) -> int:
    n = 0
    for block in enc.transformer.layers:
        attn, ff = block[0], block[1]
        lins = []
        if "qkv" in targets:
            lins.append(attn.to_qkv)
        if "proj" in targets:
            lins.append(attn.to_out)
        if "mlp" in targets:
            lins += [ff.net[1], ff.net[3]]
        n += sum(rank * (lin.in_features + lin.out_features) for lin in lins)
    return n


@pytest.mark.parametrize("targets", [("qkv", "proj"), ("qkv", "proj", "mlp")])
def test_parameter_counts(targets):
    enc = _encoder()
    base_total = sum(p.numel() for p in enc.parameters())
    expected = _expected_adapter_params(enc, 4, targets)
    names = apply_lora(enc, LoRAConfig(rank=4, targets=targets))
    counts = count_parameters(enc)
    assert len(names) == len(enc.transformer.layers) * (2 if len(targets) == 2 else 4)
    assert counts["adapter"] == expected > 0
    assert counts["trainable"] == expected  # only the adapters train
    assert counts["total"] == base_total + expected
    assert isinstance(enc.transformer.layers[0][0].to_qkv, LoRALinear)
    # base keys are unchanged: a plain encoder's state dict loads into the adapted one
    missing, unexpected = enc.load_state_dict(_encoder(1).state_dict(), strict=False)
    assert not unexpected and all(k.endswith(("lora_a", "lora_b")) for k in missing)


def test_zero_adapter_is_the_base_model_exactly():
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    plain = ClayBackbone(_encoder(), freeze="all")
    adapted = ClayBackbone(_encoder(), freeze="all", lora=LoRAConfig(rank=8, dropout=0.1))
    adapted.train()  # dropout active: the zero B still adds nothing
    with torch.no_grad():
        assert torch.equal(plain.tokens(x, META), adapted.tokens(x, META))


def test_merge_equals_unmerged_and_unmerge_restores():
    enc = _encoder()
    bb = ClayBackbone(enc, freeze="all", lora=LoRAConfig(rank=4, alpha=8, targets=TARGETS_ALL))
    g = torch.Generator().manual_seed(2)
    for name, p in bb.encoder.named_parameters():
        if name.endswith("lora_b"):
            p.data = torch.randn(p.shape, generator=g) * 0.05
    x = torch.randn(2, 3, 16, 16, generator=g)
    before = {k: v.clone() for k, v in bb.encoder.state_dict().items()}
    with torch.no_grad():
        unmerged = bb.tokens(x, META)
        plain = ClayBackbone(_encoder(), freeze="all").tokens(x, META)
        assert not torch.allclose(unmerged, plain, atol=1e-3)  # the adapters do change it
        assert merge_lora(bb.encoder) == 4 * len(enc.transformer.layers)
        merged = bb.tokens(x, META)
        with pytest.raises(ValueError, match="unmerge"):
            lora_state_dict(bb.encoder)
        unmerge_lora(bb.encoder)
        again = bb.tokens(x, META)
    assert torch.allclose(merged, unmerged, atol=1e-5)
    assert torch.allclose(again, unmerged, atol=1e-6)
    after = bb.encoder.state_dict()
    assert all(torch.allclose(before[k], after[k], atol=1e-6) for k in before)


def test_lora_trains_only_adapters_and_head():
    bb = ClayBackbone(_encoder(), freeze="all", lora=LoRAConfig(rank=2))
    model = ChipModel(bb, 3)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(
        n.endswith(("lora_a", "lora_b")) or not n.startswith("backbone.") for n in trainable
    )
    assert not bb.fully_frozen  # so the trainer does not cache frozen features
    with pytest.raises(ValueError, match="frozen encoder"):
        ClayBackbone(_encoder(), freeze=2, lora=LoRAConfig(rank=2))
    with pytest.raises(ValueError, match="rank"):
        LoRAConfig(rank=0)
    with pytest.raises(ValueError, match="targets"):
        LoRAConfig(targets=("qkv", "ffn"))


@pytest.fixture(scope="module")
def lora_head(sample_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora") / "head"
    run = finetune_classify(
        sample_dir / "eurosat_ms",
        out,
        lora=4,
        epochs=4,
        batch_size=16,
        lr=1e-2,
        progress=False,
        resume=False,
        val_fraction=0.3,
        keep="last",
    )
    return out, run


def test_lora_head_round_trip(lora_head, sample_dir, tmp_path):
    out, run = lora_head
    spec = read_head_spec(out)
    b = spec.backbone
    assert b["lora"]["rank"] == 4 and b["lora"]["targets"] == ["qkv", "proj"]
    assert not b["encoder_in_folder"] and len(b["lora_base_sha256"]) == 64
    tensors = load_file(str(out / HEAD_TENSORS))
    assert not any(k.startswith("encoder.") for k in tensors)  # adapters + head only
    adapters = {k: v for k, v in tensors.items() if k.startswith("lora.")}
    assert sum(v.numel() for v in adapters.values()) == run.spec.training["parameters"]["adapter"]
    assert any(float(v.abs().max()) > 0 for k, v in adapters.items() if k.endswith("lora_b"))
    # the loaded model is the trained one: same logits as the model training left in memory
    model, _ = load_head(out)
    trained = torch.load(str(out / "checkpoint.pt"), weights_only=True)["model"]
    own = {k: v for k, v in model.state_dict().items() if k in trained}
    assert own and all(torch.equal(own[k], trained[k]) for k in own)
    table = tmp_path / "p.parquet"
    rep = predict_chips(out, [sample_dir / "eurosat_ms"], table)
    df = pd.read_parquet(table)
    assert rep.chips == 30 and df["label_pred"].notna().all()
    probs = df[[c for c in df.columns if c.startswith("prob_")]].to_numpy()
    assert np.allclose(probs.sum(1), 1, atol=1e-4)
    # merged inference gives the same predictions
    x = torch.randn(3, len(spec.bands), 64, 64, generator=torch.Generator().manual_seed(0))
    meta = Metadata(waves=torch.tensor(spec.waves), gsd=10.0)
    with torch.no_grad():
        a = model(x, meta)
        merge_lora(model.backbone.encoder)
        assert torch.allclose(model(x, meta), a, atol=1e-4)


def test_lora_head_refuses_other_base_weights(lora_head, tmp_path):
    out, _ = lora_head
    # same model id recorded, different adapted weights: the fingerprint catches it
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    doc = json.loads((bad / "head.json").read_text())
    doc["backbone"]["lora_base_sha256"] = "0" * 64
    (bad / "head.json").write_text(json.dumps(doc))
    with pytest.raises(HeadError, match="other base weights"):
        load_head(bad)
    # adapters of the wrong shape: refused as damaged
    bad2 = tmp_path / "bad2"
    shutil.copytree(out, bad2)
    t = load_file(str(bad2 / HEAD_TENSORS))
    k = next(k for k in t if k.startswith("lora.") and k.endswith("lora_a"))
    t[k] = torch.zeros(2, t[k].shape[1])
    save_file(t, str(bad2 / HEAD_TENSORS))
    import hashlib

    doc = json.loads((bad2 / "head.json").read_text())
    doc["tensors_sha256"] = hashlib.sha256((bad2 / HEAD_TENSORS).read_bytes()).hexdigest()
    (bad2 / "head.json").write_text(json.dumps(doc))
    with pytest.raises(HeadError, match="damaged"):
        load_head(bad2)


def test_lora_with_unfrozen_blocks_is_a_user_error(sample_dir, tmp_path):
    with pytest.raises(TrainingDataError, match="frozen encoder"):
        finetune_classify(
            sample_dir / "eurosat_ms", tmp_path / "h", lora=4, freeze=1, epochs=1, progress=False
        )
    assert not (tmp_path / "h" / "head.json").exists()


def test_cli_lora_option(sample_dir, tmp_path):
    """`clay-search finetune classify --lora RANK` writes a LoRA head; with --unfreeze-last it
    is a one-line user error."""
    import subprocess
    import sys

    base = [sys.executable, "-m", "clay_search.cli.main", "finetune", "classify"]
    data = str(sample_dir / "eurosat_ms")
    r = subprocess.run(
        [
            *base,
            data,
            "--out",
            str(tmp_path / "h"),
            "--lora",
            "2",
            "--lora-alpha",
            "4",
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "-q",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    lora = read_head_spec(tmp_path / "h").backbone["lora"]
    assert lora["rank"] == 2 and lora["alpha"] == 4
    r = subprocess.run(
        [*base, data, "--out", str(tmp_path / "h2"), "--lora", "2", "--unfreeze-last", "1", "-q"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr and "frozen encoder" in r.stderr
    assert not (tmp_path / "h2").exists()


def test_lora_head_onnx_matches_torch(lora_head, tmp_path):
    """The ONNX export folds the adapters in; onnxruntime matches the unmerged torch model."""
    ort = pytest.importorskip("onnxruntime")
    from clay_search.model.export import export_onnx

    out, _ = lora_head
    model, spec = load_head(out)
    x = np.random.default_rng(0).normal(size=(3, len(spec.bands), 64, 64)).astype(np.float32)
    zeros = np.zeros((3, 4), np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x), Metadata(waves=torch.tensor(spec.waves), gsd=10.0))
    path = export_onnx(tmp_path / "lora.onnx", head=out)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(
        None, {"pixels": x, "time": zeros, "latlon": zeros, "gsd": np.array(10.0, np.float32)}
    )[0]
    assert np.abs(got - ref.numpy()).max() < 1e-3
