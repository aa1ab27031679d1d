"""The error payload that crosses the queue: typed by kind, problems kept, JSON all the way."""

from __future__ import annotations

import json
import logging

import pytest

from jobs.errors import RemoteError, answer, error_payload, unwrap
from model.errors import CheckpointError, ConfigError, DataError

log = logging.getLogger("test")


def _raise(exc: Exception) -> dict:
    raise exc


def test_config_error_keeps_its_json_paths() -> None:
    exc = ConfigError.from_problems([("training.numb_steps", "required key is missing"),
                                     ("model.descriptor.sel", "unknown key")])
    p = error_payload(exc)
    assert p["kind"] == "config" and p["type"] == "ConfigError"
    assert p["problems"] == [{"loc": "training.numb_steps", "msg": "required key is missing"},
                             {"loc": "model.descriptor.sel", "msg": "unknown key"}]


def test_data_error_names_the_file_as_the_user_knows_it() -> None:
    exc = DataError("has shape (3,), expected (4, 9)", path="/srv/data/datasets/ds-1/files/sys/set.000/box.npy")
    p = error_payload(exc, shown=lambda t: t.replace("/srv/data/datasets/ds-1/files/", "dataset:ds-1/"))
    assert p["kind"] == "data"
    assert p["problems"] == [{"loc": "dataset:ds-1/sys/set.000/box.npy", "msg": "has shape (3,), expected (4, 9)"}]
    assert "/srv" not in p["message"]


@pytest.mark.parametrize(("exc", "kind", "by_input"), [
    (ConfigError("bad", path="loss.pref"), "config", True),
    (DataError("bad", path="coord.npy"), "data", True),
    (CheckpointError("not a model"), "checkpoint", True),
    (RuntimeError("CUDA out of memory"), "internal", False),
])
def test_a_synchronous_answer_comes_back_as_the_same_typed_error(exc: Exception, kind: str, by_input: bool) -> None:
    envelope = json.loads(json.dumps(answer(lambda: _raise(exc), log)))  # as Celery's JSON carries it
    with pytest.raises(RemoteError) as caught:
        unwrap(envelope)
    assert caught.value.error["kind"] == kind and caught.value.caused_by_input is by_input
    assert caught.value.problems == ([(p["loc"], p["msg"]) for p in error_payload(exc)["problems"]])
    assert str(exc) in str(caught.value)


def test_a_result_passes_through() -> None:
    assert unwrap(answer(lambda: {"x": 1}, log)) == {"ok": True, "x": 1}


def test_a_traceback_is_kept_for_job_rows_only() -> None:
    try:
        _raise(ValueError("boom"))
    except ValueError as exc:
        assert error_payload(exc)["traceback"] is None
        trace = error_payload(exc, with_traceback=True)["traceback"]
        assert trace is not None and "ValueError: boom" in trace
