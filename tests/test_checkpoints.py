"""Loading official Clay checkpoints and clay-search weights, and refusing bad files."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from clay_search.errors import CheckpointError, CheckpointNotFoundError, ClaySearchError
from clay_search.model import ClayEncoder, get_config, load_encoder, save_weights
from clay_search.model.clay import ClayDecoder


def _encoder(name="tiny", seed=0) -> ClayEncoder:
    torch.manual_seed(seed)
    return ClayEncoder.from_config(get_config(name)).eval()


def _lightning_ckpt(path, enc: ClayEncoder, *, with_extras=True, hp=None):
    """A checkpoint in the layout Clay's Lightning module saves."""
    sd = {f"model.encoder.{k}": v for k, v in enc.state_dict().items()}
    if with_extras:
        cfg = get_config("tiny")
        dec = ClayDecoder.from_config(cfg)
        sd.update({f"model.decoder.{k}": v for k, v in dec.state_dict().items()})
        sd["model.teacher.blocks.0.attn.qkv.weight"] = torch.zeros(3, 3)
        sd["model.proj.weight"] = torch.zeros(768, cfg.dim)
    ckpt = {"state_dict": sd, "epoch": 3, "global_step": 100, "pytorch-lightning_version": "2.4"}
    if hp is not None:
        ckpt["hyper_parameters"] = hp
    torch.save(ckpt, path)


def _same(a: ClayEncoder, b: ClayEncoder) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_lightning_checkpoint_loads_encoder_and_infers_size(tmp_path):
    enc = _encoder("tiny")
    path = tmp_path / "clay-v1.5.ckpt"
    _lightning_ckpt(path, enc)
    loaded, info = load_encoder(path)
    assert info.config.name == "tiny" and info.config.patch_size == 8
    assert info.format == "clay-lightning"
    assert _same(loaded, enc)
    assert not loaded.training


def test_own_weights_roundtrip_and_model_id(tmp_path):
    enc = _encoder("nano", seed=1)
    info = save_weights(enc, get_config("nano"), tmp_path / "w")
    loaded, info2 = load_encoder(tmp_path / "w")
    assert _same(loaded, enc)
    assert info.model_id == info2.model_id and info.model_id.startswith("clay-nano-p8-")
    # the safetensors file or the config may be given directly
    assert load_encoder(tmp_path / "w" / "model.safetensors")[1].model_id == info.model_id
    assert load_encoder(tmp_path / "w" / "config.json")[1].model_id == info.model_id
    # other weights -> other id
    other = save_weights(_encoder("nano", seed=2), get_config("nano"), tmp_path / "w2")
    assert other.model_id != info.model_id


def test_missing_file_is_clear(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="not found: pass the path"):
        load_encoder(tmp_path / "nope.ckpt")
    assert issubclass(CheckpointNotFoundError, FileNotFoundError)


@pytest.mark.parametrize(
    "content",
    [b"this is not a checkpoint\n", bytes(range(256)) * 10, b""],
    ids=["text", "random-bytes", "empty"],
)
def test_wrong_format_is_clear(tmp_path, content):
    path = tmp_path / "bad.ckpt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_encoder(path)


def test_corrupt_safetensors_is_clear(tmp_path):
    save_weights(_encoder("nano"), get_config("nano"), tmp_path / "w")
    st = tmp_path / "w" / "model.safetensors"
    st.write_bytes(st.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_encoder(tmp_path / "w")


def test_arbitrary_objects_are_never_unpickled(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("unpickled!",))

    path = tmp_path / "evil.ckpt"
    with open(path, "wb") as f:
        torch.save({"state_dict": {}, "obj": Evil()}, f, pickle_module=pickle)
    with pytest.raises(CheckpointError, match="refuses to unpickle"):
        load_encoder(path)


def test_mismatched_shapes_name_the_first_mismatches(tmp_path):
    enc = _encoder("tiny")
    sd = {f"model.encoder.{k}": v for k, v in enc.state_dict().items()}
    sd["model.encoder.transformer.layers.1.1.net.1.weight"] = torch.zeros(10, 192)
    torch.save({"state_dict": sd, "hyper_parameters": {"model_size": "tiny"}}, tmp_path / "x.ckpt")
    with pytest.raises(CheckpointError, match=r"transformer\.layers\.1\.1\.net\.1\.weight"):
        load_encoder(tmp_path / "x.ckpt")


def test_missing_keys_are_named(tmp_path):
    enc = _encoder("tiny")
    sd = {f"model.encoder.{k}": v for k, v in enc.state_dict().items() if "layers.5" not in k}
    torch.save({"state_dict": sd, "hyper_parameters": {"model_size": "tiny"}}, tmp_path / "x.ckpt")
    with pytest.raises(CheckpointError, match="missing keys"):
        load_encoder(tmp_path / "x.ckpt")


def test_checkpoint_without_encoder_keys(tmp_path):
    torch.save({"state_dict": {"something.else": torch.zeros(1)}}, tmp_path / "x.ckpt")
    with pytest.raises(CheckpointError, match="model.encoder"):
        load_encoder(tmp_path / "x.ckpt")


def test_wrong_weights_config(tmp_path):
    save_weights(_encoder("nano"), get_config("nano"), tmp_path / "w")
    cfg = json.loads((tmp_path / "w" / "config.json").read_text())
    cfg["format"] = "something-else"
    (tmp_path / "w" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="not a clay-search weights config"):
        load_encoder(tmp_path / "w")
    # the weights do not fit the declared model size
    cfg["format"] = "clay-search-weights"
    cfg["model"] = get_config("tiny").to_dict()
    (tmp_path / "w" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ClaySearchError, match="shape mismatches"):
        load_encoder(tmp_path / "w")
