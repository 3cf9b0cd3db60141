"""Options defined once (clay_search.optionset): train, eval and ingest derive their CLI and
Python signatures from the same fields; bad values are one-line errors before any work."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from clay_search.errors import QueryError, TrainingDataError
from clay_search.evaluation import EvalParams, evaluate
from clay_search.ingest.params import IngestParams
from clay_search.optionset import OptionSet, opt
from clay_search.training import TrainParams, pretrain


@pytest.mark.parametrize(
    ("params", "python", "command"),
    [
        (TrainParams, pretrain, "clay_search.cli.train:train"),
        (EvalParams, evaluate, "clay_search.cli.eval:eval_cmd"),
        (IngestParams, "clay_search.ingest:ingest", "clay_search.cli.ingest:ingest"),
    ],
)
def test_cli_and_python_signatures_come_from_the_fields(params, python, command):
    import importlib

    def load(ref):
        if not isinstance(ref, str):
            return ref
        mod, name = ref.split(":")
        return getattr(importlib.import_module(mod), name)

    py = inspect.signature(load(python)).parameters
    cli = inspect.signature(load(command)).parameters
    fields = params.option_fields()
    assert fields
    for f in fields:
        assert py[f.name].default == f.default
        assert py[f.name].kind is inspect.Parameter.KEYWORD_ONLY
        if f.metadata.get("cli", True):
            assert cli[f.name].default == f.default
            # the help text of the command is the field's
            info = cli[f.name].annotation.__metadata__[0]
            assert info.help == f.metadata["help"]
        else:
            assert f.name not in cli
    assert f"``{fields[0].name}``" in (load(python).__doc__ or "")


def test_train_command_keeps_its_flags():
    from clay_search.cli.train import train

    cli = inspect.signature(train).parameters
    infos = {n: p.annotation.__metadata__[0] for n, p in cli.items()}
    # in Annotated, typer reads the first positional argument of Option as a declaration
    decl = {n: (i.default, *i.param_decls) for n, i in infos.items()}
    assert decl["max_time_s"] == ("--max-time",)
    assert decl["resume"] == ("--resume/--no-resume",)
    assert decl["verbose"] == ("--verbose", "-v")
    assert "progress" not in cli  # Python-only


def test_bad_values_raise_the_option_error():
    with pytest.raises(TypeError, match="steps_typo"):
        TrainParams.from_options(steps_typo=3)
    with pytest.raises(TrainingDataError, match="--size 'huge' must be one of nano"):
        TrainParams.from_options(size="huge")
    with pytest.raises(TrainingDataError, match="--max-time 'soon' must be a number"):
        TrainParams.from_options(max_time_s="soon")
    with pytest.raises(TrainingDataError, match="--batch-size 0"):
        TrainParams.from_options(batch_size=0)
    p = TrainParams.from_options(steps="12", data="somewhere", lr="0.01")
    assert p.steps == 12 and p.data == Path("somewhere") and p.lr == 0.01
    with pytest.raises(QueryError, match="unknown dataset 'sentinel'"):
        EvalParams.from_options(datasets=["sentinel"])
    assert EvalParams.from_options().datasets == ("eurosat_rgb", "eurosat_ms", "bigearthnet")
    assert EvalParams.from_options(datasets="eurosat_ms").datasets == ("eurosat_ms",)


def test_required_options_and_custom_flags():
    @dataclass
    class Opts(OptionSet):
        option_kind = "demo"
        name: str = opt(__import__("dataclasses").MISSING, "A name.")
        count: int | None = opt(None, "How many.", flag="--n")

    with pytest.raises(TypeError, match="missing demo option"):
        Opts.from_options()
    with pytest.raises(ValueError, match="--n 'x' must be a number"):
        Opts.from_options(name="a", count="x")
    assert Opts.from_options(name="a", count="3").options() == {"name": "a", "count": 3}


def test_train_command_bad_option_is_one_line_exit_2(tmp_path):
    from clay_search.cli.main import app

    res = CliRunner().invoke(app, ["train", "--size", "huge", "--out", str(tmp_path / "run")])
    assert res.exit_code == 2
    assert "--size 'huge' must be one of" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "run").exists()


def test_train_missing_data_restores_the_thread_count(tmp_path):
    """``threads`` applies to the run only: torch's global setting is back afterwards."""
    from clay_search.cli.main import app

    before = torch.get_num_threads()
    want = 1 if before != 1 else 2
    res = CliRunner().invoke(
        app, ["train", "--data", str(tmp_path / "none"), "--threads", str(want)]
    )
    assert res.exit_code == 2 and "does not exist" in res.output
    assert torch.get_num_threads() == before
    with pytest.raises(FileNotFoundError):
        evaluate(data=tmp_path / "none", threads=want)
    assert torch.get_num_threads() == before


def test_eval_command_unknown_dataset_is_one_line_exit_2(tmp_path):
    from clay_search.cli.main import app

    res = CliRunner().invoke(app, ["eval", "--data", str(tmp_path), "--dataset", "sentinel"])
    assert res.exit_code == 2 and "unknown dataset 'sentinel'" in res.output


def test_finetune_commands_use_the_shared_options_defaults():
    """The finetune commands' shared options take flag and help from ``FinetuneOptions``; the
    chip commands' defaults are its defaults (segment trains fewer epochs, smaller batches)."""
    from clay_search.cli.finetune import FinetuneOptions, classify, regress, segment

    fields = {f.name: f for f in FinetuneOptions.option_fields()}
    import typing

    for cmd in (classify, regress, segment):
        params = inspect.signature(cmd).parameters
        hints = typing.get_type_hints(cmd, include_extras=True)
        for name, p in params.items():
            if name not in fields:
                continue
            info = hints[name].__metadata__[0]
            assert info.help == fields[name].metadata["help"]
            if cmd is not segment and p.default is not inspect.Parameter.empty:
                assert p.default == fields[name].default, (cmd.__name__, name)
