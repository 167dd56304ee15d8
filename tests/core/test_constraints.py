"""A setting's declared type and range: one declaration, the same refusal from code, the command
line, the environment and the service schema."""
import dataclasses

import pytest

from functions.commands import COMMANDS, parser
from functions.config import Config
from functions.core.constraints import Boolean, Interval, Many, Maybe, Options, Text, check_fields, parse_field
from functions.core.errors import DataError
from functions.efficiency.benchmark import Protocol
from functions.efficiency.service import BenchmarkRequest, ServiceSettings
from functions.runs.fe_vs_ft import FeVsFtSettings


@pytest.mark.parametrize("constraint, value, problem", [
    (Interval(int, 1), 0, "must be at least 1"),
    (Interval(int, 1), True, "is not an integer"),
    (Interval(float, 0, low_open=True, note="a rate"), 0.0, "must be positive: a rate"),
    (Interval(float, 0, 1, high_open=True), 1.0, r"must be in [0, 1)"),
    (Interval(float), float("nan"), "is not a finite number"),
    (Options(("a", "b")), "c", "is unknown; choose one of ['a', 'b']"),
    (Boolean(), 1, "is not true or false"),
    (Many(Interval(int, 0)), (1, -1), "must all be non-negative"),
    (Maybe(Interval(int, 1)), None, ""),
    (Text(), 3, "is not a name"),
])
def test_a_constraint_names_what_is_wrong(constraint, value, problem):
    assert constraint.problem(value) == problem


def test_text_is_parsed_as_the_declared_type():
    assert Interval(int, 1).parse("3") == 3
    assert Many(Interval(int)).parse("0,1") == Many(Interval(int)).parse("[0, 1]") == (0, 1)
    assert Many(Text()).parse("stem,head") == ("stem", "head")
    assert Boolean().parse("False") is False
    for constraint, text in ((Interval(int), "2.5"), (Interval(float), "inf"), (Boolean(), "maybe")):
        with pytest.raises(ValueError):
            constraint.parse(text)
    with pytest.raises(DataError, match=r"^--set depth='x': depth must be an integer$"):
        parse_field(Config, "depth", "x", "--set depth='x'")


def test_every_field_is_declared_and_its_default_allowed():
    for cls in (Config, FeVsFtSettings, Protocol, ServiceSettings):
        assert set(cls.constraints) == {f.name for f in dataclasses.fields(cls)}
        check_fields(cls())


def test_the_service_schema_and_the_command_line_read_the_protocol_declaration():
    schema = BenchmarkRequest.model_json_schema()["properties"]
    assert (schema["threshold"]["minimum"], schema["threshold"]["maximum"]) == (0.0, 1.0)
    assert schema["window"]["minimum"] == 1 and schema["window"]["default"] == Protocol().window
    parser()  # registers the commands
    options = {flags[0]: keywords for flags, keywords in COMMANDS["sample-efficiency"].args}
    assert options["--threshold"]["type"]("0.5") == 0.5
    fe_vs_ft = {keywords.get("dest"): flags[0] for flags, keywords in COMMANDS["fe-vs-ft"].args}
    assert fe_vs_ft["max_epochs"] == "--epochs" and "momentum" not in fe_vs_ft
