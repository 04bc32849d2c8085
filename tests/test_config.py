"""speechqe.config, the one typed configuration system: one message style (source, key path,
message, bad value), unknown keys listing the known ones, values converted by their declared
types, the same errors for a model built in code, and the file readers' errors."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Literal, Optional

import pytest
from pydantic import Field, model_validator

from speechqe.config import (
    NONE_WORDS,
    Float,
    Int,
    StrictModel,
    load_file,
    plain,
    read_document,
    read_mapping,
    validate,
)
from speechqe.errors import ConfigError


class Inner(StrictModel):
    kind: Literal["a", "b"] = "a"
    weight: Annotated[Float, Field(ge=0)] = 1.0


class Outer(StrictModel):
    flag: bool = False
    count: Annotated[Int, Field(ge=1)] = 2
    alpha: Annotated[Optional[Float], NONE_WORDS] = None
    inner: tuple[Inner, ...] = ()
    low: Float = 0.0
    high: Float = 1.0

    @model_validator(mode="after")
    def _order(self) -> "Outer":
        if not self.low < self.high:
            raise ValueError(f"need low < high (got low={self.low}, high={self.high})")
        return self


@pytest.mark.parametrize("data, message", [
    ({"flag": "maybe"}, "f.yaml: flag: Input should be a valid boolean, unable to interpret input (got 'maybe')"),
    ({"count": "2.5"}, "f.yaml: count: Input should be a valid integer, unable to parse string as an integer (got '2.5')"),
    ({"count": 2.5}, "f.yaml: count: Input should be a valid integer, got a number with a fractional part (got 2.5)"),
    ({"count": True}, "f.yaml: count: Input should be a number, not a boolean (got True)"),
    ({"count": 0}, "f.yaml: count: Input should be greater than or equal to 1 (got 0)"),
    ({"low": "inf"}, "f.yaml: low: Input should be a finite number (got 'inf')"),
    ({"alpha": "abc"}, "f.yaml: alpha: Input should be a valid number, unable to parse string as a number (got 'abc')"),
    ({"colour": 1}, "f.yaml: unknown key 'colour' (known: flag, count, alpha, inner, low, high)"),
    ({"inner": [{"kind": "c"}]}, "f.yaml: inner.0.kind: Input should be 'a' or 'b' (got 'c')"),
    ({"inner": [{}, {"knd": "a"}]}, "f.yaml: inner.1: unknown key 'knd' (known: kind, weight)"),
    ({"low": 2}, "f.yaml: need low < high (got low=2.0, high=1.0)"),
    ([1, 2], "f.yaml: Input should be a valid dictionary or instance of Outer (got [1, 2])"),
])
def test_one_message_style(data, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(Outer, data, "f.yaml")


def test_several_problems_are_reported_together():
    with pytest.raises(ConfigError) as err:
        validate(Outer, {"flag": "maybe", "count": 0, "x": 1}, "f.yaml")
    msg = str(err.value)
    assert msg.startswith("f.yaml: ") and msg.count("; ") == 2
    assert "flag: " in msg and "count: " in msg and "unknown key 'x'" in msg


def test_values_are_converted_by_their_types_to_one_canonical_form():
    a = validate(Outer, {"flag": "false", "count": "3", "alpha": "none", "low": "1e-3"})
    b = validate(Outer, {"flag": 0, "count": 3.0, "alpha": None, "low": 0.001})
    assert a == b and hash(a) == hash(b) and plain(a) == plain(b)
    assert plain(a) == {"flag": False, "count": 3, "alpha": None, "inner": [], "low": 0.001, "high": 1.0}
    assert validate(Outer, plain(a)) == a  # round trip
    assert validate(Outer, {"alpha": "NULL"}).alpha is None and validate(Outer, {"alpha": "0.4"}).alpha == 0.4


def test_labels_name_keys_that_came_from_elsewhere():
    labels = {"flag": "--param m.flag", "low": "--param m.low"}
    with pytest.raises(ConfigError, match=re.escape(
            "--param m.flag: Input should be a valid boolean, unable to interpret input (got 'maybe')")):
        validate(Outer, {"flag": "maybe"}, "metric 'm'", noun="parameter", labels=labels)
    with pytest.raises(ConfigError, match=re.escape("--param m.flg: unknown parameter (known: flag, ")):
        validate(Outer, {"flg": 1}, "metric 'm'", noun="parameter", labels={"flg": "--param m.flg"})
    with pytest.raises(ConfigError, match=re.escape(
            "metric 'm': need low < high (got low=5.0, high=1.0) (set by --param m.flag, --param m.low)")):
        validate(Outer, {"low": "5"}, "metric 'm'", labels=labels)
    with pytest.raises(ConfigError, match=re.escape(
            "metric 'm': count: Input should be greater than or equal to 1 (got 0); --param m.flag: Input")):
        validate(Outer, {"count": 0, "flag": "maybe"}, "metric 'm'", labels=labels)


def test_a_model_built_in_code_raises_the_same_config_error():
    with pytest.raises(ConfigError, match=re.escape(
            "Outer: flag: Input should be a valid boolean, unable to interpret input (got 'maybe'); "
            "inner.0.kind: Input should be 'a' or 'b' (got 'c')")):
        Outer(flag="maybe", inner=[{"kind": "c"}])
    with pytest.raises(ConfigError, match=re.escape("Inner: unknown key 'size' (known: kind, weight)")):
        Inner(size=3)
    o = Outer(flag="1", inner=[Inner(kind="b")])
    assert o.flag is True and o.inner[0].kind == "b"
    with pytest.raises(Exception, match="frozen"):
        o.flag = False  # type: ignore[misc]


@dataclass(frozen=True)
class DataParams:
    rate: float = 1.0
    on: bool = True

    def __post_init__(self) -> None:
        if self.rate <= 0:
            raise ValueError(f"rate must be > 0 (got {self.rate})")


def test_plain_dataclasses_are_validated_the_same_way():
    assert validate(DataParams, {"rate": "2", "on": "off"}) == DataParams(2.0, False)
    with pytest.raises(ConfigError, match=re.escape("d: unknown key 'speed' (known: rate, on)")):
        validate(DataParams, {"speed": 1}, "d")
    with pytest.raises(ConfigError, match=re.escape("d: rate must be > 0 (got -1.0)")):
        validate(DataParams, {"rate": "-1"}, "d")
    with pytest.raises(ConfigError, match=re.escape("d: on: Input should be a valid boolean")):
        validate(DataParams, {"on": "perhaps"}, "d")


def test_file_readers_name_the_file_and_the_problem(tmp_path):
    p = tmp_path / "c.yaml"
    with pytest.raises(ConfigError, match=re.escape(f"config file not found: {p}")):
        read_mapping(p)
    with pytest.raises(ConfigError, match=re.escape(f"config file {tmp_path} is a folder")):
        read_document(tmp_path)
    p.write_bytes(b"a: 1\nb: \xff\n")
    with pytest.raises(ConfigError, match=re.escape(f"{p}: line 2 is not UTF-8 text (byte 0xff)")):
        read_mapping(p)
    p.write_text("a: [1,\n")
    with pytest.raises(ConfigError, match=re.escape(f"{p}: not valid YAML")):
        read_mapping(p)
    p.write_text("- 1\n")
    with pytest.raises(ConfigError, match=re.escape(f"{p}: a suite must be a mapping of keys to values (got list)")):
        read_mapping(p, "suite")
    assert read_document(p) == [1]
    p.write_text("")
    assert read_mapping(p) == {}
    j = tmp_path / "c.json"
    j.write_text('{"flag": "yes", "inner": [{"weight": "2"}]}')
    assert load_file(Outer, j) == Outer(flag=True, inner=[Inner(weight=2.0)])
    j.write_text('{"flag": ')
    with pytest.raises(ConfigError, match=re.escape(f"{j}: not valid JSON")):
        load_file(Outer, j)
    j.write_text('{"flag": "maybe"}')
    with pytest.raises(ConfigError, match=re.escape(f"{j}: flag: Input should be a valid boolean")):
        load_file(Outer, j)
